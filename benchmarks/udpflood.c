/*
 * A UDP flood for benchmarks/shaper.py: datagrams of SIZE bytes to ADDR:9 as fast as
 * sendmmsg(2) goes (or at RATE packets/s), for SECONDS; prints what it sent as JSON.
 *
 *   udpflood ADDR SIZE SECONDS [RATE]
 *
 * Python sends one datagram per system call, slower than the engine it measures.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: udpflood ADDR SIZE SECONDS [RATE]\n");
		return 2;
	}
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(9)};
	if (s < 0 || inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
		fprintf(stderr, "udpflood: bad address %s\n", argv[1]);
		return 2;
	}
	int size = atoi(argv[2]);
	double seconds = atof(argv[3]), rate = argc > 4 ? atof(argv[4]) : 0;
	static char buf[65536];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	memset(msgs, 0, sizeof msgs);
	for (int i = 0; i < BATCH; i++) {
		iov[i] = (struct iovec){buf, size};
		msgs[i].msg_hdr.msg_name = &to;
		msgs[i].msg_hdr.msg_namelen = sizeof to;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	long sent = 0, failed = 0;
	double start = now(), t = start;
	while ((t = now()) - start < seconds) {
		if (rate > 0 && sent >= (t - start) * rate)
			continue;
		int n = sendmmsg(s, msgs, BATCH, 0);
		if (n > 0)
			sent += n;
		else
			failed++;
	}
	printf("{\"sent\": %ld, \"seconds\": %.6f, \"failed_calls\": %ld}\n", sent, t - start, failed);
	return 0;
}
