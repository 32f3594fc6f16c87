"""Acquisition: new links carry nothing until their terminals have locked on."""

from netemu.plan.acquisition import RECENT_S, Acquisition


def make():
    return Acquisition(lambda link: (10.0, 2.0))


def test_the_first_links_are_established():
    acq = make()
    assert acq.update(0.0, {"ab", "bc"}) == {"ab", "bc"}


def test_a_new_link_waits_for_its_acquisition_time():
    acq = make()
    acq.update(0.0, {"ab"})
    assert acq.update(5.0, {"ab", "cd"}) == {"ab"}
    assert acq.next_ready() == 15.0
    assert acq.update(14.9, {"ab", "cd"}) == {"ab"}
    assert acq.update(15.0, {"ab", "cd"}) == {"ab", "cd"}
    assert acq.next_ready() is None


def test_a_recent_partner_is_reacquired_faster():
    acq = make()
    acq.update(0.0, {"ab"})
    acq.update(1.0, set())  # lost
    acq.update(3.0, {"ab"})  # back: re-acquisition, 2 s
    assert acq.update(4.9, {"ab"}) == set()
    assert acq.update(5.0, {"ab"}) == {"ab"}
    acq.update(6.0, set())
    acq.update(6.0 + RECENT_S + 1, {"ab"})  # long gone: initial acquisition again
    assert acq.next_ready() == 6.0 + RECENT_S + 11


def test_pending_until_reported():
    """A link whose time has passed stays 'next' until update() reports it."""
    acq = make()
    acq.update(0.0, set())
    acq.update(1.0, {"ab"})
    assert acq.next_ready() == 11.0
    assert acq.next_ready() == 11.0  # still pending after its time
    acq.update(12.0, {"ab"})
    assert acq.next_ready() is None


def test_random_spread_is_bounded_and_reproducible():
    def ready_times(seed):
        acq = Acquisition(lambda link: (10.0, 2.0), lambda link: 5.0, seed)
        acq.update(0.0, set())
        acq.update(1.0, {f"l{i}" for i in range(200)})
        return [acq.ready_at[f"l{i}"] for i in range(200)]

    a, b, c = ready_times(1), ready_times(1), ready_times(2)
    assert a == b and a != c
    assert all(11.0 <= t <= 16.0 for t in a)
    assert max(a) - min(a) > 4.0  # the spread is used


def test_became_ready_names_each_link_once_when_it_finishes_acquiring():
    """What each update's "link-ready" events are: links that were acquiring and now
    carry, whichever caller drives the updates (the planner at epochs, the live
    controller between them), never one that carried from the start or came up ready."""
    acq = Acquisition(lambda link: (10.0, 2.0) if link == "cd" else (0.0, 0.0))
    acq.update(0.0, {"ab"})
    assert acq.became_ready == set()
    acq.update(5.0, {"ab", "cd", "ef"})  # ef needs no acquisition: up and ready at once
    assert acq.became_ready == set() and acq.carrying == {"ab", "ef"}
    acq.update(15.0, {"ab", "cd", "ef"})
    assert acq.became_ready == {"cd"}
    acq.update(16.0, {"ab", "cd", "ef"})
    assert acq.became_ready == set()
