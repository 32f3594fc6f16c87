/*
 * netemu's wire engine: the propagation of every emulated link, for kernels without sch_netem.
 *
 * Each end of a link is a TAP interface (`to-PEER` in the node's namespace) whose file
 * descriptor this process holds. What a node sends on a link comes out of that descriptor
 * after the sender's HTB rate limiter, as a frame leaves a real terminal; the engine holds it
 * for the direction's propagation delay (plus jitter), drops what the link loses (random loss,
 * turbulence fades, a link that is down or acquiring) and writes it into the peer's TAP at its
 * due time. The peer's kernel then receives it as from a wire: its receive timestamp (plain
 * ping, SO_TIMESTAMPNS), tcpdump inside the node and its routing all see the packet after the
 * delay. Reading a TAP frees the sender's socket memory (tun orphans the packet), so TCP small
 * queues never hold the sender back; GSO packets stay whole (vnet headers) unless the direction
 * loses packets, where the sending TAP's offloads are switched off so the kernel hands over
 * wire-sized packets and each is lost on its own, as on a real link.
 *
 * Per direction a FIFO (due times never decrease: a link does not reorder), and one binary heap
 * of the FIFOs' heads. A timerfd on CLOCK_MONOTONIC wakes the loop a little before the earliest
 * due time (the lead, adapted to how late wake-ups have been) and the last microseconds are
 * spun, at real-time priority, with memory locked and the CPUs kept out of deep idle states
 * (/dev/cpu_dma_latency) while the engine runs.
 *
 * Fail closed: a TAP whose descriptor nobody holds drops what it is sent, so if the engine dies
 * no packet passes at all, delayed or not; the TAPs go with their namespaces. A packet the engine cannot hold (its
 * memory budget is spent) is dropped and counted as emulator overload, apart from the link's
 * own loss; so are packets the kernel dropped because a TAP's queue was full (the engine fell
 * behind), read from the TAPs' tx_dropped counters.
 *
 * Control: one command per line on stdin, replies as JSON lines on stdout.
 *   bind NS PATH                         a namespace, by id          -> {"ok":"bind","ns":NS}
 *   link ID NSA IFA NAMEA MACA NSB IFB NAMEB MACB
 *                                        two TAPs with these ifindexes, names and MACs;
 *                                        directions 2*ID (A->B) and 2*ID+1 (B->A), blocked
 *                                                                    -> {"ok":"link","id":ID}
 *   set DIR DELAY_NS JITTER_NS LOSS FADE_P FADE_NS BLOCKED
 *                                        a direction's shape from its next packet on (no reply)
 *   limit BYTES                          memory the held packets may use  (no reply)
 *   queue PACKETS                        the queue of TAPs made from now on (no reply)
 *   stats [dirs]                         counters (and per direction)  -> {"ok":"stats",...}
 *   quit
 * A malformed command is a bug in the controller: the engine says so on stderr and exits 2.
 * It dies with its parent (PR_SET_PDEATHSIG), so a killed controller never leaves it behind;
 * SIGINT, SIGTERM and SIGHUP it ignores (the controller's to handle).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <math.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define VNET sizeof(struct virtio_net_hdr)
/* A packet buffer: small ones hold a wire-sized frame, large ones a whole GSO packet. */
#define SMALL_BYTES 2048
#define LARGE_BYTES (65536 + 512)
#define SMALL_DATA (SMALL_BYTES - (int)sizeof(struct pkt))
#define CHUNK_BYTES (2 << 20)
/* Made at start (growing the pool while packets wait costs milliseconds): 16,384 small
 * buffers (1 Gbit/s of 1,200-byte packets over 200 ms) and 248 large (2.5 Gbit/s of GSO
 * packets over 50 ms). */
#define POOL_SMALL_CHUNKS 16
#define POOL_LARGE_CHUNKS 8
/* Released this much after its due time, a packet counts as late (a fidelity alarm). */
#define LATE_NS 500000
/* Wake-up lead: bounds, and how many recent wake-ups it is taken from. */
#define LEAD_MIN_NS 10000
#define LEAD_MAX_NS 300000
#define LEAD_WINDOW 512
/* Between two looks at the TAPs, at most this many packets are read from one or released. */
#define BURST 64
#define STAMP_EVERY 8
/* While spinning toward a due time, look at the TAPs this often (a look is a system call). */
#define SPIN_LOOK_NS 4000
#define OFFLOADS (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)

struct pkt {
	struct pkt *next;
	int64_t due;
	uint32_t len; /* vnet header + frame */
	uint32_t large;
	unsigned char data[];
};

struct dir {
	int out_fd;   /* the peer's TAP: where this direction's packets arrive */
	int in_port;  /* the sender's TAP (port index): where they are read */
	int64_t delay_ns, jitter_ns, fade_ns, last_due, fade_clock;
	double loss, fade_p;
	bool blocked, faded, used;
	int heap_pos; /* -1: its FIFO is empty */
	struct pkt *head, *tail;
	uint64_t in, out, out_bytes, lost, blocked_n, overload, write_errors, held;
};

struct port {
	int fd, ns, dir, offloads;
	char name[IFNAMSIZ];
	uint64_t ring_drops0; /* the TAP's tx_dropped when it was made */
};

static struct dir *dirs;
static int n_dirs;
static struct port *ports;
static int n_ports;
/* Namespaces by path, opened only while entered: a descriptor each for thousands of
 * namespaces would take the room two TAPs a link need under the open-files limit. */
static char **ns_path;
static int n_ns;
static int *heap, heap_len;
static int own_ns, epfd, timer_fd;
/* Packets a TAP queues for the engine to read: what a stall of the engine can be absorbed. */
static int tap_queue = 1000;

static struct pkt *free_small, *free_large;
static uint64_t pool_bytes, held_bytes, limit_bytes = 1ULL << 30;
static uint64_t held, overload, late, released;
static int64_t worst_late_ns;
/* Release error (ns after due) histogram: bucket i holds [2^i, 2^(i+1)) ns. */
static uint64_t error_hist[40];
static int64_t lead_ns = 50000, wake_ring[LEAD_WINDOW];
static int wake_n;
static unsigned char scratch[LARGE_BYTES];
/* Time asleep in the current window, the busy share of the last one, forced rests. */
static int64_t window_start, window_idle;
static double last_busy, busy_max;
static uint64_t rests, spin_outs;
static bool spin_out; /* the current window's spin budget ran out */

static void die(const char *what)
{
	fprintf(stderr, "netemu engine: %s: %s\n", what, strerror(errno));
	exit(3);
}

static void protocol(const char *line)
{
	fprintf(stderr, "netemu engine: malformed command: %.200s\n", line);
	exit(2);
}

static int64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* -- randomness: xoshiro256**, seeded from the kernel ------------------------------------ */
static uint64_t rng[4];

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(void)
{
	uint64_t r = rotl(rng[1] * 5, 7) * 9, t = rng[1] << 17;
	rng[2] ^= rng[0];
	rng[3] ^= rng[1];
	rng[1] ^= rng[2];
	rng[0] ^= rng[3];
	rng[2] ^= t;
	rng[3] = rotl(rng[3], 45);
	return r;
}

static double uniform(void) { return (next_u64() >> 11) * 0x1.0p-53; }

static double gauss(void)
{
	double u = uniform(), v = uniform();
	return sqrt(-2 * log(u > 0 ? u : 1e-300)) * cos(2 * M_PI * v);
}

/*
 * A turbulence fade: a two-state chain in continuous time, faded fade_p of the time, fades
 * lasting fade_ns on average, whatever the packet rate. Over a gap dt the state is drawn from
 * the chain's transient distribution, exact for two states.
 */
static bool in_fade(struct dir *d, int64_t now)
{
	double dt = now > d->fade_clock ? (now - d->fade_clock) / 1e9 : 0;
	double p = d->fade_p < 0.999 ? d->fade_p : 0.999;
	double leave = 1e9 / (double)d->fade_ns, enter = leave * p / (1 - p);
	double decay = exp(-(leave + enter) * dt);
	double prob = d->faded ? p + (1 - p) * decay : p - p * decay;
	d->fade_clock = now;
	d->faded = uniform() < prob;
	return d->faded;
}

/* -- packet memory: two size classes, in locked chunks, never returned -------------------- */
static bool grow_pool(bool large)
{
	struct pkt **list = large ? &free_large : &free_small;
	size_t size = large ? LARGE_BYTES : SMALL_BYTES;
	unsigned char *chunk =
		mmap(NULL, CHUNK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (chunk == MAP_FAILED)
		return false;
	/* No huge pages: khugepaged, collapsing them, runs for milliseconds on our CPU where the
	 * kernel does not preempt it, and every release waits. */
	madvise(chunk, CHUNK_BYTES, MADV_NOHUGEPAGE);
	memset(chunk, 0, CHUNK_BYTES); /* fault it in now, not while a packet waits */
	pool_bytes += CHUNK_BYTES;
	for (size_t off = 0; off + size <= CHUNK_BYTES; off += size) {
		struct pkt *p = (struct pkt *)(chunk + off);
		p->large = large;
		p->next = *list;
		*list = p;
	}
	return true;
}

static struct pkt *take(bool large)
{
	struct pkt **list = large ? &free_large : &free_small;
	size_t size = large ? LARGE_BYTES : SMALL_BYTES;
	if (held_bytes + size > limit_bytes || (!*list && !grow_pool(large)))
		return NULL;
	struct pkt *p = *list;
	*list = p->next;
	held_bytes += size;
	return p;
}

static void give(struct pkt *p)
{
	struct pkt **list = p->large ? &free_large : &free_small;
	held_bytes -= p->large ? LARGE_BYTES : SMALL_BYTES;
	p->next = *list;
	*list = p;
}

/* -- the heap of FIFO heads, earliest due first ------------------------------------------- */
static int64_t head_due(int i) { return dirs[heap[i]].head->due; }

static void heap_set(int i, int d)
{
	heap[i] = d;
	dirs[d].heap_pos = i;
}

static void sift_up(int i)
{
	int d = heap[i];
	int64_t due = dirs[d].head->due;
	while (i > 0 && head_due((i - 1) / 2) > due) {
		heap_set(i, heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(i, d);
}

static void sift_down(int i)
{
	int d = heap[i];
	int64_t due = dirs[d].head->due;
	for (;;) {
		int c = 2 * i + 1;
		if (c >= heap_len)
			break;
		if (c + 1 < heap_len && head_due(c + 1) < head_due(c))
			c++;
		if (head_due(c) >= due)
			break;
		heap_set(i, heap[c]);
		i = c;
	}
	heap_set(i, d);
}

static int64_t next_due(void) { return heap_len ? head_due(0) : INT64_MAX; }

/* -- namespaces and TAPs ------------------------------------------------------------------ */
/* Into namespace ns (-1: the engine's own); false if it is gone. */
static bool enter(int ns)
{
	if (ns < 0) {
		if (setns(own_ns, CLONE_NEWNET))
			die("setns");
		return true;
	}
	int fd = open(ns_path[ns], O_RDONLY | O_CLOEXEC);
	bool ok = fd >= 0 && !setns(fd, CLONE_NEWNET);
	if (fd >= 0)
		close(fd);
	return ok;
}

static uint64_t tx_dropped(const char *name);

static const char *make_tap(int ns, int ifindex, const char *name, const char *mac, int *fd_out,
			    uint64_t *drops)
{
	static char err[160];
	unsigned char hw[6];
	if (ns < 0 || ns >= n_ns || !ns_path[ns])
		return "unknown namespace";
	if (sscanf(mac, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &hw[0], &hw[1], &hw[2], &hw[3], &hw[4],
		   &hw[5]) != 6)
		return "bad MAC address";
	if (!enter(ns))
		return "namespace gone";
	const char *fail = NULL;
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = {0};
	unsigned index = ifindex;
	int hdr = VNET;
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (fd < 0 || sock < 0)
		fail = "open /dev/net/tun";
	else if (ioctl(fd, TUNSETIFINDEX, &index))
		fail = "TUNSETIFINDEX";
	else if (ioctl(fd, TUNSETIFF, &ifr))
		fail = "TUNSETIFF";
	else if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) || ioctl(fd, TUNSETOFFLOAD, OFFLOADS))
		fail = "TAP offloads";
	/* Persistent: closing a TAP's last descriptor then costs nothing (unregistering one takes
	 * ~16 ms, minutes for a constellation); the namespace's deletion removes them all at once.
	 * Without the engine a persistent TAP has no reader and drops what it is sent. */
	else if (ioctl(fd, TUNSETPERSIST, 1))
		fail = "TUNSETPERSIST";
	if (!fail && tap_queue != 1000) {
		struct ifreq q = {0};
		strncpy(q.ifr_name, name, IFNAMSIZ - 1);
		q.ifr_qlen = tap_queue;
		if (ioctl(sock, SIOCSIFTXQLEN, &q))
			fail = "set queue length";
	}
	if (!fail) {
		struct ifreq hwr = {0};
		strncpy(hwr.ifr_name, name, IFNAMSIZ - 1);
		hwr.ifr_hwaddr.sa_family = 1; /* ARPHRD_ETHER */
		memcpy(hwr.ifr_hwaddr.sa_data, hw, 6);
		if (ioctl(sock, SIOCSIFHWADDR, &hwr))
			fail = "set MAC address";
	}
	if (!fail)
		*drops = tx_dropped(name);
	if (sock >= 0)
		close(sock);
	enter(-1);
	if (fail) {
		snprintf(err, sizeof err, "%s %s: %s", fail, name, strerror(errno));
		if (fd >= 0)
			close(fd);
		return err;
	}
	*fd_out = fd;
	return NULL;
}

/* The kernel's tx_dropped of a device in the current namespace (/proc/self/net/dev), or of
 * all devices: calls `found` with each name and its counter. */
static void read_tx_dropped(void (*found)(const char *name, uint64_t drops, void *arg), void *arg)
{
	FILE *f = fopen("/proc/self/net/dev", "re");
	char line[512];
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		char *s = line, *colon = strchr(line, ':');
		uint64_t v[12];
		while (*s == ' ')
			s++;
		if (!colon)
			continue;
		*colon = 0;
		if (sscanf(colon + 1,
			   "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
			   " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64,
			   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10],
			   &v[11]) == 12)
			found(s, v[11], arg); /* rx: 8 fields; tx: bytes packets errs drop */
	}
	fclose(f);
}

struct wanted {
	const char *name;
	uint64_t drops;
};

static void match_one(const char *name, uint64_t drops, void *arg)
{
	struct wanted *w = arg;
	if (!strcmp(name, w->name))
		w->drops = drops;
}

static uint64_t tx_dropped(const char *name)
{
	struct wanted w = {name, 0};
	read_tx_dropped(match_one, &w);
	return w.drops;
}

static void grow(void **array, int *have, int want, size_t size)
{
	if (want <= *have)
		return;
	int n = *have ? *have : 64;
	while (n < want)
		n *= 2;
	*array = realloc(*array, n * size);
	if (!*array)
		die("realloc");
	memset((char *)*array + *have * size, 0, (n - *have) * size);
	*have = n;
}

static int dirs_cap, ports_cap, ns_cap, heap_cap;

static void add_port(int port, int ns, int fd, int dir, const char *name, uint64_t drops)
{
	grow((void **)&ports, &ports_cap, port + 1, sizeof *ports);
	ports[port] = (struct port){.fd = fd, .ns = ns, .dir = dir, .offloads = OFFLOADS};
	ports[port].ring_drops0 = drops;
	strncpy(ports[port].name, name, IFNAMSIZ - 1);
	if (port >= n_ports)
		n_ports = port + 1;
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 2 + (uint64_t)port};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev))
		die("epoll_ctl");
}

static void add_dir(int d, int in_port, int out_fd)
{
	grow((void **)&dirs, &dirs_cap, d + 1, sizeof *dirs);
	grow((void **)&heap, &heap_cap, d + 1, sizeof *heap);
	dirs[d] = (struct dir){.out_fd = out_fd, .in_port = in_port, .blocked = true,
			       .used = true, .heap_pos = -1};
	if (d >= n_dirs)
		n_dirs = d + 1;
}

/* -- packets in and out ------------------------------------------------------------------- */
static void arrive(struct dir *d, struct pkt *p, int64_t now)
{
	d->in++;
	if (d->blocked) {
		d->blocked_n++;
		give(p);
		return;
	}
	if ((d->fade_p > 0 && d->fade_ns > 0 && in_fade(d, now)) ||
	    (d->loss > 0 && uniform() < d->loss)) {
		d->lost++;
		give(p);
		return;
	}
	int64_t due = now + d->delay_ns;
	if (d->jitter_ns > 0) {
		due += (int64_t)(gauss() * d->jitter_ns);
		if (due < now)
			due = now;
	}
	if (due < d->last_due) /* a link never reorders */
		due = d->last_due;
	d->last_due = p->due = due;
	p->next = NULL;
	if (d->tail) {
		d->tail->next = p;
	} else {
		d->head = p;
		heap_set(heap_len++, d - dirs);
		sift_up(heap_len - 1);
	}
	d->tail = p;
	d->held++;
	held++;
}

/*
 * Read what a TAP has (up to BURST packets). What is in its queue arrived before we looked:
 * each packet is stamped with the time the look began, renewed every STAMP_EVERY packets (so
 * one that came in meanwhile is stamped at most a few microseconds early), which also spares a
 * clock reading per packet.
 */
static void drain(int port)
{
	struct port *pt = &ports[port];
	struct dir *d = &dirs[pt->dir];
	int64_t stamp = now_ns();
	for (int i = 0; i < BURST; i++) {
		if (i && i % STAMP_EVERY == 0)
			stamp = now_ns();
		struct pkt *p = take(false);
		if (!p) {
			/* No memory for it: read it into the scratch buffer and drop it. */
			if (read(pt->fd, scratch, sizeof scratch) < 0)
				return;
			d->in++;
			d->overload++;
			overload++;
			continue;
		}
		struct iovec iov[2] = {{p->data, SMALL_DATA}, {scratch, sizeof scratch}};
		ssize_t n = readv(pt->fd, iov, 2);
		if (n <= 0) {
			give(p);
			return;
		}
		if (n > SMALL_DATA) {
			struct pkt *big = take(true);
			if (!big) {
				give(p);
				d->in++;
				d->overload++;
				overload++;
				continue;
			}
			memcpy(big->data, p->data, SMALL_DATA);
			memcpy(big->data + SMALL_DATA, scratch, n - SMALL_DATA);
			give(p);
			p = big;
		}
		p->len = n;
		arrive(d, p, stamp);
	}
}

static void record_error(int64_t err)
{
	int b = 0;
	while (b < 39 && err >= (int64_t)2 << b)
		b++;
	error_hist[err <= 0 ? 0 : b]++;
	if (err > LATE_NS)
		late++;
	if (err > worst_late_ns)
		worst_late_ns = err;
}

/* Write out what is due by now (at most BURST packets); the number written. */
static int release(int64_t now)
{
	int n = 0;
	int64_t t = now;
	while (heap_len && n < BURST) {
		struct dir *d = &dirs[heap[0]];
		struct pkt *p = d->head;
		if (p->due > now)
			break;
		if (n % STAMP_EVERY == 0)
			t = now_ns();
		record_error(t - p->due);
		if (write(d->out_fd, p->data, p->len) < 0) {
			d->write_errors++;
		} else {
			d->out++;
			d->out_bytes += p->len - VNET;
		}
		d->head = p->next;
		if (!d->head) {
			d->tail = NULL;
			d->heap_pos = -1;
			if (--heap_len) {
				heap_set(0, heap[heap_len]);
				sift_down(0);
			}
		} else {
			sift_down(0);
		}
		d->held--;
		held--;
		released++;
		give(p);
		n++;
	}
	return n;
}

/* Offloads on a sending TAP: GSO packets whole, unless its direction loses packets. */
static void set_offloads(struct dir *d)
{
	struct port *pt = &ports[d->in_port];
	int want = d->loss > 0 || d->fade_p > 0 ? 0 : OFFLOADS;
	if (want != pt->offloads && ioctl(pt->fd, TUNSETOFFLOAD, want) == 0)
		pt->offloads = want;
}

/* -- control ------------------------------------------------------------------------------ */
static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static double percentile_us(double q)
{
	uint64_t total = 0, seen = 0;
	for (int i = 0; i < 40; i++)
		total += error_hist[i];
	if (!total)
		return 0;
	for (int i = 0; i < 40; i++) {
		seen += error_hist[i];
		if (seen >= q * total)
			return ((double)((int64_t)2 << i)) / 1000; /* the bucket's upper edge */
	}
	return 0;
}

static int port_ns_order(const void *a, const void *b)
{
	return ports[*(const int *)a].ns - ports[*(const int *)b].ns;
}

struct ns_ports {
	int *order, from, to;
	uint64_t sum;
};

static void match_ports(const char *name, uint64_t drops, void *arg)
{
	struct ns_ports *np = arg;
	for (int i = np->from; i < np->to; i++) {
		struct port *pt = &ports[np->order[i]];
		if (!strcmp(name, pt->name))
			np->sum += drops > pt->ring_drops0 ? drops - pt->ring_drops0 : 0;
	}
}

/* Packets the kernel dropped because a TAP's queue was full: one look per namespace. */
static uint64_t ring_drops(void)
{
	struct ns_ports np = {malloc(n_ports * sizeof(int) + 1), 0, 0, 0};
	int n = 0;
	for (int i = 0; i < n_ports; i++)
		if (ports[i].fd > 0)
			np.order[n++] = i;
	qsort(np.order, n, sizeof(int), port_ns_order);
	while (np.from < n) {
		int ns = ports[np.order[np.from]].ns;
		for (np.to = np.from; np.to < n && ports[np.order[np.to]].ns == ns; np.to++)
			;
		if (enter(ns))
			read_tx_dropped(match_ports, &np);
		np.from = np.to;
	}
	enter(-1);
	free(np.order);
	return np.sum;
}

static void stats(bool full)
{
	struct rusage ru;
	uint64_t ring = full ? ring_drops() : 0;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
		     (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
	uint64_t lost = 0, blocked = 0, in = 0, out = 0;
	for (int i = 0; i < n_dirs; i++) {
		in += dirs[i].in, out += dirs[i].out;
		lost += dirs[i].lost, blocked += dirs[i].blocked_n;
	}
	printf("{\"ok\":\"stats\",\"held\":%" PRIu64 ",\"in\":%" PRIu64 ",\"out\":%" PRIu64
	       ",\"lost\":%" PRIu64 ",\"blocked\":%" PRIu64 ",\"overload\":%" PRIu64
	       ",\"overload_engine\":%" PRIu64 ",\"overload_ring\":%" PRIu64
	       ",\"late\":%" PRIu64 ",\"worst_late_ms\":%.3f"
	       ",\"release_error_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}"
	       ",\"lead_us\":%.1f,\"busy\":%.3f,\"busy_max\":%.3f,\"spin_outs\":%" PRIu64
	       ",\"rests\":%" PRIu64
	       ",\"cpu_s\":%.3f,\"pool_mib\":%.1f,\"held_mib\":%.1f",
	       held, in, out, lost, blocked, overload + ring, overload, ring, late,
	       worst_late_ns / 1e6, percentile_us(0.5), percentile_us(0.99), worst_late_ns / 1e3,
	       lead_ns / 1e3, last_busy, busy_max, spin_outs, rests, cpu, pool_bytes / 1048576.0,
	       held_bytes / 1048576.0);
	if (full) {
		printf(",\"dirs\":{");
		bool first = true;
		for (int i = 0; i < n_dirs; i++) {
			struct dir *d = &dirs[i];
			if (!d->used)
				continue;
			printf("%s\"%d\":{\"in\":%" PRIu64 ",\"out\":%" PRIu64
			       ",\"out_bytes\":%" PRIu64 ",\"lost\":%" PRIu64
			       ",\"blocked\":%" PRIu64 ",\"overload\":%" PRIu64 ",\"held\":%" PRIu64
			       ",\"write_errors\":%" PRIu64 "}",
			       first ? "" : ",", i, d->in, d->out, d->out_bytes, d->lost, d->blocked_n,
			       d->overload,
			       d->held, d->write_errors);
			first = false;
		}
		printf("}");
	}
	reply("}");
}

static bool command(char *line)
{
	char name_a[IFNAMSIZ + 1], name_b[IFNAMSIZ + 1], mac_a[24], mac_b[24], path[4096];
	int id, ns, ns_a, ns_b, if_a, if_b, blocked, used;
	double loss, fade_p;
	int64_t delay, jitter, fade;
	unsigned long long bytes;
	if (!strncmp(line, "set ", 4)) {
		if (sscanf(line + 4, "%d %" SCNd64 " %" SCNd64 " %lf %lf %" SCNd64 " %d%n", &id,
			   &delay, &jitter, &loss, &fade_p, &fade, &blocked, &used) != 7 ||
		    id < 0 || id >= n_dirs || !dirs[id].used)
			protocol(line);
		struct dir *d = &dirs[id];
		d->delay_ns = delay, d->jitter_ns = jitter, d->loss = loss;
		d->fade_p = fade_p, d->fade_ns = fade, d->blocked = blocked;
		set_offloads(d);
	} else if (!strncmp(line, "link ", 5)) {
		if (sscanf(line + 5, "%d %d %d %15s %23s %d %d %15s %23s", &id, &ns_a, &if_a, name_a,
			   mac_a, &ns_b, &if_b, name_b, mac_b) != 9 ||
		    id < 0)
			protocol(line);
		int fa = -1, fb = -1;
		uint64_t da = 0, db = 0;
		const char *err = make_tap(ns_a, if_a, name_a, mac_a, &fa, &da);
		if (!err && (err = make_tap(ns_b, if_b, name_b, mac_b, &fb, &db)))
			close(fa);
		if (err) {
			reply("{\"error\":\"link %d: %s\"}", id, err);
			return true;
		}
		add_dir(2 * id, 2 * id, fb);
		add_dir(2 * id + 1, 2 * id + 1, fa);
		add_port(2 * id, ns_a, fa, 2 * id, name_a, da);
		add_port(2 * id + 1, ns_b, fb, 2 * id + 1, name_b, db);
		reply("{\"ok\":\"link\",\"id\":%d}", id);
	} else if (!strncmp(line, "bind ", 5)) {
		if (sscanf(line + 5, "%d %4095s", &ns, path) != 2 || ns < 0)
			protocol(line);
		grow((void **)&ns_path, &ns_cap, ns + 1, sizeof *ns_path);
		for (int i = n_ns; i <= ns; i++)
			ns_path[i] = NULL;
		if (ns >= n_ns)
			n_ns = ns + 1;
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			reply("{\"error\":\"bind %s: %s\"}", path, strerror(errno));
		} else {
			close(fd);
			free(ns_path[ns]);
			ns_path[ns] = strdup(path);
			reply("{\"ok\":\"bind\",\"ns\":%d}", ns);
		}
	} else if (!strncmp(line, "queue ", 6)) {
		if (sscanf(line + 6, "%d", &tap_queue) != 1 || tap_queue < 1)
			protocol(line);
	} else if (!strncmp(line, "limit ", 6)) {
		if (sscanf(line + 6, "%llu", &bytes) != 1)
			protocol(line);
		limit_bytes = bytes;
	} else if (!strcmp(line, "stats") || !strcmp(line, "stats dirs")) {
		stats(line[5] != 0);
	} else if (!strcmp(line, "quit")) {
		return false;
	} else if (line[0]) {
		protocol(line);
	}
	return true;
}

/* -- the loop ----------------------------------------------------------------------------- */
static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* A timer wake-up came `late_by` after it was due: keep the lead above recent lateness. */
static void learn_wake(int64_t late_by)
{
	wake_ring[wake_n++ % LEAD_WINDOW] = late_by;
	if (wake_n % 64)
		return;
	int n = wake_n < LEAD_WINDOW ? wake_n : LEAD_WINDOW;
	int64_t sorted[LEAD_WINDOW];
	memcpy(sorted, wake_ring, n * sizeof *sorted);
	qsort(sorted, n, sizeof *sorted, cmp64);
	int64_t want = sorted[n * 99 / 100] + 5000;
	lead_ns = want < LEAD_MIN_NS ? LEAD_MIN_NS : want > LEAD_MAX_NS ? LEAD_MAX_NS : want;
}

static char control[1 << 20];
static size_t control_len, control_done; /* bytes buffered; of them, already carried out */
static bool control_eof;

/* Read what the controller wrote. */
static void read_control(void)
{
	if (control_done) { /* make room: drop what was carried out */
		memmove(control, control + control_done, control_len - control_done);
		control_len -= control_done;
		control_done = 0;
	}
	if (control_len == sizeof control)
		protocol("(a line longer than 1 MiB)");
	ssize_t n = read(0, control + control_len, sizeof control - control_len);
	if (n > 0) {
		control_len += n;
	} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
		control_eof = true; /* what is buffered is still carried out */
		epoll_ctl(epfd, EPOLL_CTL_DEL, 0, NULL);
	}
}

/*
 * Carry out at most CONTROL_SLICE commands; false after quit. An epoch's changes come by the
 * thousand: between slices the loop reads the TAPs and releases what is due, so a packet
 * never waits for the whole batch to be parsed.
 */
#define CONTROL_SLICE 8
static bool control_pending(void)
{
	return memchr(control + control_done, '\n', control_len - control_done) != NULL;
}

static bool run_control(void)
{
	for (int i = 0; i < CONTROL_SLICE; i++) {
		char *start = control + control_done;
		char *nl = memchr(start, '\n', control_len - control_done);
		if (!nl)
			break;
		*nl = 0;
		control_done = nl + 1 - control;
		if (!command(start))
			return false;
	}
	return true;
}

static bool handle(struct epoll_event *ev, int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t what = ev[i].data.u64;
		if (what == 0) {
			read_control();
		} else if (what == 1) {
			uint64_t x;
			if (read(timer_fd, &x, sizeof x) < 0 && errno != EAGAIN)
				die("timerfd");
		} else {
			drain(what - 2);
		}
	}
	return true;
}

/*
 * The kernel stops a real-time task that runs more than 95% of a second (RT throttling) for the
 * rest of that second: 50 ms in which no packet would move. So the engine keeps count of its
 * time asleep in windows of BUSY_WINDOW_NS: it spins toward due times only while the current
 * window has left it idle enough, and if a window leaves it less than REST_NS asleep it rests for
 * the difference (the TAPs' queues hold what comes meanwhile); such rests are counted.
 */
#define BUSY_WINDOW_NS 100000000
#define REST_NS 7000000
#define SPIN_MAX_BUSY 0.5
/* Engines sharing a CPU (simulated machines on one host) share its real-time budget too:
 * each spins at most NETEMU_ENGINE_SPIN_SHARE of the time (SPIN_MAX_BUSY by default). */
static double spin_max_busy = SPIN_MAX_BUSY;
/* Engines sharing a CPU yield it while spinning: at the same real-time priority, one that
 * spins out its lead would keep the other from reading what arrives meanwhile, and each
 * packet would be stamped that much late, unseen (a hop's delay counts from its stamp). */
static bool yield_in_spin;

static void account(int64_t now)
{
	if (now - window_start < BUSY_WINDOW_NS)
		return;
	if (window_idle < REST_NS) {
		struct timespec rest = {0, REST_NS - window_idle};
		nanosleep(&rest, NULL);
		rests++;
		window_idle = REST_NS;
		now = now_ns();
	}
	last_busy = 1 - (double)window_idle / (now - window_start);
	busy_max = last_busy > busy_max ? last_busy : busy_max;
	spin_outs += spin_out;
	window_start = now, window_idle = 0, spin_out = false;
}

static void run(void)
{
	struct epoll_event ev[256];
	int64_t armed = 0;
	window_start = now_ns();
	for (;;) {
		int64_t now = now_ns(), due = next_due();
		if (armed && now >= armed)
			armed = 0; /* it fired (or is firing): a one-shot timer is then disarmed */
		account(now);
		if (control_pending()) { /* a slice of commands, then the TAPs and what is due */
			if (!run_control())
				return;
			int n = epoll_wait(epfd, ev, 256, 0);
			if (!handle(ev, n > 0 ? n : 0))
				return;
			release(now_ns());
			continue;
		}
		if (control_eof)
			return; /* the controller is gone: stop (the TAPs then carry nothing) */
		/* Spin only while this window has left room for it (spinning is busy time). */
		int64_t busy_so_far = now - window_start - window_idle;
		int64_t lead = busy_so_far < spin_max_busy * BUSY_WINDOW_NS ? lead_ns : 0;
		spin_out |= lead == 0;
		if (due <= now) {
			release(now);
			int n = epoll_wait(epfd, ev, 256, 0); /* arrivals meanwhile: stamp them */
			if (!handle(ev, n > 0 ? n : 0))
				return;
			continue;
		}
		if (due - now <= lead) { /* spin out the last microseconds, watching the TAPs */
			int64_t look = now + SPIN_LOOK_NS < due ? now + SPIN_LOOK_NS : due;
			while (now_ns() < look) {
				if (yield_in_spin)
					sched_yield();
				else
					__builtin_ia32_pause();
			}
			int n = epoll_wait(epfd, ev, 256, 0);
			if (!handle(ev, n > 0 ? n : 0))
				return;
			continue;
		}
		int64_t wake = due == INT64_MAX ? 0 : due - lead;
		if (wake != armed) {
			struct itimerspec its = {0};
			its.it_value.tv_sec = wake / 1000000000;
			its.it_value.tv_nsec = wake % 1000000000;
			if (timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, NULL))
				die("timerfd_settime");
			armed = wake;
		}
		int n = epoll_wait(epfd, ev, 256, -1);
		int64_t woke = now_ns();
		window_idle += woke - now;
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		if (armed && woke >= armed) {
			learn_wake(woke - armed);
			armed = 0; /* fired: disarmed */
		}
		if (!handle(ev, n > 0 ? n : 0))
			return;
	}
}

/* Die with the parent, sleep precisely, run at real-time priority, lock memory. */
static void tune(char *notes, size_t size)
{
	struct rlimit rl;
	size_t used = 0;
	notes[0] = 0;
	if (!getrlimit(RLIMIT_NOFILE, &rl)) { /* two TAPs a link */
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1) /* the parent died before prctl took effect */
		exit(1);
	/* Stop signals are the controller's: a terminal's Ctrl-C, a closed terminal, or
	 * `systemctl stop` signalling the whole unit must not stop traffic before the
	 * controller's teardown, which ends with "quit". */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_TIMERSLACK, 1);
	/* One CPU (the last one allowed, or NETEMU_ENGINE_CPU; "any": none): a real-time task
	 * that migrates wakes up tens of microseconds later, cache-cold. */
	const char *want = getenv("NETEMU_ENGINE_CPU");
	cpu_set_t cpus;
	if (!(want && !strcmp(want, "any")) && !sched_getaffinity(0, sizeof cpus, &cpus)) {
		int cpu = want ? atoi(want) : -1;
		for (int i = CPU_SETSIZE - 1; cpu < 0 && i >= 0; i--)
			if (CPU_ISSET(i, &cpus))
				cpu = i;
		CPU_ZERO(&cpus);
		CPU_SET(cpu, &cpus);
		if (!sched_setaffinity(0, sizeof cpus, &cpus))
			used += snprintf(notes + used, size - used, "\"CPU %d\",", cpu);
	}
	const char *share = getenv("NETEMU_ENGINE_SPIN_SHARE");
	if (share) {
		double f = atof(share);
		spin_max_busy = f < 0 ? 0 : f > SPIN_MAX_BUSY ? SPIN_MAX_BUSY : f;
		yield_in_spin = true;
		used += snprintf(notes + used, size - used, "\"spin share %.2f\",", spin_max_busy);
	}
	struct sched_param sp = {.sched_priority = 50};
	if (sched_setscheduler(0, SCHED_FIFO, &sp))
		used += snprintf(notes + used, size - used, "\"no real-time priority (%s)\",",
				 strerror(errno));
	else
		used += snprintf(notes + used, size - used, "\"SCHED_FIFO 50\",");
	if (mlockall(MCL_CURRENT | MCL_FUTURE))
		used += snprintf(notes + used, size - used, "\"memory not locked (%s)\",",
				 strerror(errno));
	/* Keep the CPUs out of deep idle states while we run: waking from them takes 10s of us. */
	int32_t zero = 0;
	int qos = open("/dev/cpu_dma_latency", O_WRONLY | O_CLOEXEC);
	if (qos >= 0 && write(qos, &zero, sizeof zero) == sizeof zero)
		used += snprintf(notes + used, size - used, "\"cpu_dma_latency 0\",");
	else
		used += snprintf(notes + used, size - used, "\"cpu_dma_latency unchanged\",");
	/* Any socket asking for receive timestamps makes the kernel stamp every packet it
	 * receives; switching that on is deferred work, so do it now, not when a receiver in a
	 * node asks and its first packets would be stamped late. */
	int one = 1, stamp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (stamp < 0 || setsockopt(stamp, SOL_SOCKET, SO_TIMESTAMP, &one, sizeof one))
		used += snprintf(notes + used, size - used, "\"no receive timestamps\",");
	if (used)
		notes[used - 1] = 0; /* the last comma */
	if (getrandom(rng, sizeof rng, 0) != sizeof rng)
		die("getrandom");
}

int main(void)
{
	char notes[512];
	tune(notes, sizeof notes);
	own_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (own_ns < 0 || epfd < 0 || timer_fd < 0)
		die("set-up");
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev))
		die("epoll_ctl stdin");
	ev.data.u64 = 1;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, timer_fd, &ev))
		die("epoll_ctl timer");
	for (int i = 0; i < POOL_SMALL_CHUNKS + POOL_LARGE_CHUNKS; i++)
		if (!grow_pool(i >= POOL_SMALL_CHUNKS))
			die("packet memory");
	reply("{\"ok\":\"ready\",\"pid\":%d,\"notes\":[%s]}", getpid(), notes);
	run();
	return 0;
}
