"""TokenClient's memory, against a model of the tokenvend API and a clock the test moves.

No sockets: the client's one way out, `_call`, is a fake service that issues tokens on the
test's clock and knows when each really expires. The clock moves while a request is under
way (half before the service answers, half while the answer travels back), as on a real
network. Two kinds of test:

- a state machine (hypothesis) that gets, refreshes, reports rejected tokens, clears, lets
  time pass and changes how the service answers, in any order, and checks after every call
  what a workload relies on: a token served from memory still has `min_ttl` plus the
  client's margin left by the service's own clock (a stale answer: unexpired, and no older
  than STALE_REUSE_SECONDS); the client asks the API exactly when its documented rule says
  so, no more and no less;
- threads that hammer the memory while the clock runs and the service is slow, checking
  that no key ever has two requests in flight and no expired token is handed out.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from tokenvend.client import STALE_REUSE_SECONDS, TokenClient, TokenVendError

PAIRS = [("dingtalk", "corp-a"), ("azure", "graph")]
MIN_TTLS = [0, 60, 300, 600]


class Clock:
    """The test's monotonic clock, safe to read and move from many threads. `seen()` is the
    last value this thread read: the `now` the client compared against."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._lock = threading.Lock()
        self._local = threading.local()

    def __call__(self) -> float:
        with self._lock:
            now = self.now
        self._local.seen = now
        return now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def seen(self) -> float:
        return float(self._local.seen)


@dataclass
class Issued:
    token: str
    expires: float  # on the test's clock: when the service stops accepting it


class Service:
    """The tokenvend API as the client sees it through `_call`. GET serves the connection's
    token while it has `min_ttl` left, else a new one of `lifetime` seconds; POST .../refresh
    replaces it (unless a rejected token's hash names an older one). `stale`: it cannot
    refresh, and serves its unexpired token marked stale; `failing`: every call is a 503."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lifetime = 3600
        self.latency = 0.0  # seconds a request takes, half each way
        self.stale = False
        self.failing = False
        self.current: dict[tuple[str, str], Issued] = {}
        self.expiry: dict[str, float] = {}  # every token issued -> when it expires
        self.calls: Counter[tuple[str, str, int | None]] = Counter()
        self.in_flight: Counter[tuple[str, str, int | None]] = Counter()
        self.most_in_flight = 0
        self.pause = 0.0  # real seconds each call takes (the thread tests)
        self.last_answer: dict[str, Any] = {}
        # When set, a GET's answer, once made, waits for it before travelling back.
        self.hold_answers: threading.Event | None = None
        self.holding = threading.Event()  # a GET's answer is waiting
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(
        self,
        provider: str,
        connection: str,
        *,
        query: dict[str, str] | None = None,
        refresh: bool = False,
        body: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        pair = (provider, connection)
        min_ttl = None if refresh else int((query or {})["min_ttl"])
        key = (provider, connection, min_ttl)
        with self._lock:
            self.calls[key] += 1
            self.in_flight[key] += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight[key])
        try:
            if self.pause:
                time.sleep(self.pause)
            self.clock.advance(self.latency / 2)
            answer = self._answer(pair, min_ttl, refresh, body)
            hold = self.hold_answers
            if hold is not None and not refresh:
                self.holding.set()
                assert hold.wait(10)
            self.clock.advance(self.latency / 2)
            self.last_answer = dict(answer)
            return answer
        finally:
            with self._lock:
                self.in_flight[key] -= 1

    def _answer(
        self,
        pair: tuple[str, str],
        min_ttl: int | None,
        refresh: bool,
        body: dict[str, str] | None,
    ) -> dict[str, Any]:
        if self.failing:
            raise TokenVendError(503, "provider_unavailable", "down", 5.0)
        with self._lock:
            now = self.clock()
            held = self.current.get(pair)
            live = held is not None and held.expires > now
            stale = False
            if self.stale:
                if refresh or not live:
                    raise TokenVendError(503, "provider_unavailable", "cannot refresh", 5.0)
                stale = True
            elif refresh:
                rejected = (body or {}).get("rejected_token_sha256")
                named = held is not None and rejected == sha256(held.token)
                if rejected is None or named or not live:
                    held = self._issue(pair, now)
            elif not live or (held is not None and held.expires - now < (min_ttl or 0)):
                held = self._issue(pair, now)
            assert held is not None
            answer: dict[str, Any] = {
                "provider": pair[0],
                "connection": pair[1],
                "access_token": held.token,
                "token_type": "Bearer",
                "expires_in": int(held.expires - now),  # whole seconds, rounded down
            }
            if stale:
                answer["stale"] = True
            return answer

    def _issue(self, pair: tuple[str, str], now: float) -> Issued:
        issued = Issued(f"tok-{next(self._numbers)}", now + self.lifetime)
        self.current[pair] = issued
        self.expiry[issued.token] = issued.expires
        return issued

    def total_calls(self) -> int:
        with self._lock:
            return sum(self.calls.values())


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def client_for(service: Service, clock: Clock, margin: int) -> TokenClient:
    client = TokenClient("http://127.0.0.1:9", region="eu-west-1", refresh_margin=margin)
    client._clock = clock
    client._call = service  # type: ignore[method-assign]
    return client


@dataclass
class Expected:
    """The model's entry: what the docstring of tokenvend.client promises about one."""

    token: str
    sent: float
    expires: float
    reuse_until: float
    stale: bool


def expected_entry(answer: dict[str, Any], sent: float, min_ttl: int, margin: int) -> Expected:
    expires = sent + answer["expires_in"]
    if answer.get("stale"):
        reuse_until = min(sent + STALE_REUSE_SECONDS, expires)
    else:
        reuse_until = min(expires - (min_ttl + margin), expires)
    return Expected(answer["access_token"], sent, expires, reuse_until, bool(answer.get("stale")))


class CacheMachine(RuleBasedStateMachine):
    """Any order of gets, refreshes, rejected tokens, clears, waits and service moods."""

    @initialize(margin=st.sampled_from([0, 60]))
    def start(self, margin: int) -> None:
        self.clock = Clock()
        self.service = Service(self.clock)
        self.margin = margin
        self.client = client_for(self.service, self.clock, margin)
        self.cache: dict[tuple[str, str, int], Expected] = {}
        self.latest: dict[tuple[str, str], Expected] = {}
        self.keys: set[tuple[str, str, int]] = set()  # every key a get went the long way for

    # -- what a workload does -------------------------------------------------------------

    @rule(
        pair=st.sampled_from(PAIRS),
        min_ttl=st.sampled_from(MIN_TTLS),
        whole=st.booleans(),
    )
    def get(self, pair: tuple[str, str], min_ttl: int, whole: bool) -> None:
        key = (*pair, min_ttl)
        now = self.clock()
        entry = self.cache.get(key)
        hit = entry is not None and now < entry.reuse_until
        calls = self.service.total_calls()
        try:
            if whole:
                answer = self.client.get(*pair, min_ttl=min_ttl)
                token = answer["access_token"]
            else:
                token = self.client.get_token(*pair, min_ttl=min_ttl)
        except TokenVendError:
            # Only a request can fail: a usable entry is served whatever the service's mood.
            assert not hit, "a cached token was not served"
            assert self.service.total_calls() == calls + 1
            self.keys.add(key)
            return
        if hit:
            assert entry is not None
            assert self.service.total_calls() == calls, "the API was asked for a cached token"
            assert token == entry.token
            # By the service's own clock, not the client's arithmetic:
            left = self.service.expiry[token] - now
            if entry.stale:
                assert left > 0 and now - entry.sent < STALE_REUSE_SECONDS
            else:
                assert left >= min_ttl + self.margin, f"{left} s left, {min_ttl} asked"
            if whole:
                assert 0 <= answer["expires_in"] <= left
            return
        assert self.service.total_calls() == calls + 1, "a needed request was not made"
        self.keys.add(key)
        # A fresh answer is handed out as the API gave it.
        answer = self.service.last_answer
        assert token == answer["access_token"]
        fetched = expected_entry(answer, now, min_ttl, self.margin)
        self.cache[key] = fetched
        self.latest[pair] = fetched

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data(), whole=st.booleans())
    def get_again(self, data: st.DataObject, whole: bool) -> None:
        """A key asked for before: where the memory has something to say."""
        provider, connection, min_ttl = data.draw(st.sampled_from(sorted(self.keys)))
        self.get((provider, connection), min_ttl, whole)

    @rule(pair=st.sampled_from(PAIRS), data=st.data())
    def refresh(self, pair: tuple[str, str], data: st.DataObject) -> None:
        # Without a rejected token, or reporting one the client holds (or held)
        known = sorted(
            {e.token for k, e in self.cache.items() if k[:2] == pair}
            | ({self.latest[pair].token} if pair in self.latest else set())
        )
        token = data.draw(st.sampled_from([None, *known]))
        now = self.clock()
        for key in [k for k, e in self.cache.items() if k[:2] == pair]:
            if token is None or self.cache[key].token == token:
                del self.cache[key]
        latest = self.latest.get(pair)
        if latest is not None and (token is None or latest.token == token):
            del self.latest[pair]
        kept = self.latest.get(pair)
        calls = self.service.total_calls()
        try:
            answer = self.client.refresh(*pair, rejected_token=token)
        except TokenVendError:
            assert self.service.total_calls() == calls + 1
            return
        if token is not None and kept is not None and now < kept.expires:
            assert self.service.total_calls() == calls
            assert answer["access_token"] == kept.token
            return
        assert self.service.total_calls() == calls + 1
        assert answer["access_token"] != token
        for key in self.keys:
            if key[:2] == pair:
                self.cache[key] = expected_entry(answer, now, key[2], self.margin)
        self.latest[pair] = expected_entry(answer, now, 0, self.margin)

    @rule()
    def clear(self) -> None:
        self.client.clear()
        self.cache.clear()
        self.latest.clear()

    # -- what happens around it -----------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 4, 30, 59, 61, 240, 300, 3000]))
    def wait(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: bool(self.cache))
    @rule(data=st.data(), offset=st.sampled_from([-0.5, -0.001, 0.0, 0.001, 0.5]))
    def wait_until_an_edge(self, data: st.DataObject, offset: float) -> None:
        """To just before, at or just after the moment an entry stops being served, or its
        token stops being valid: where an off-by-a-margin would show."""
        key = data.draw(st.sampled_from(sorted(self.cache)))
        entry = self.cache[key]
        edge = data.draw(st.sampled_from([entry.reuse_until, entry.expires]))
        target = edge + offset
        if target > self.clock.now:
            self.clock.advance(target - self.clock.now)
        if data.draw(st.booleans()):  # and ask for it there
            self.get(key[:2], key[2], data.draw(st.booleans()))

    @rule(lifetime=st.sampled_from([100, 400, 700, 3600]))
    def tokens_live(self, lifetime: int) -> None:
        self.service.lifetime = lifetime

    @rule(latency=st.sampled_from([0.0, 0.5, 20.0]))
    def network(self, latency: float) -> None:
        self.service.latency = latency

    @precondition(lambda self: not self.service.failing)
    @rule(stale=st.booleans())
    def refreshing_fails(self, stale: bool) -> None:
        self.service.stale = stale

    @rule(failing=st.booleans())
    def service_down(self, failing: bool) -> None:
        self.service.failing = failing


CacheMachine.TestCase.settings = hypothesis_settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
test_the_cache_keeps_its_word = CacheMachine.TestCase


# -- threads ----------------------------------------------------------------------------------


def test_many_threads_never_two_requests_for_one_key_nor_an_expired_token() -> None:
    # Given a service whose tokens live 400 s and whose answers take a little while, a
    # clock that runs 5 s per millisecond, and 16 threads asking for three keys
    clock = Clock()
    service = Service(clock)
    service.lifetime, service.latency, service.pause = 400, 2.0, 0.0005
    client = client_for(service, clock, margin=60)
    keys = [("dingtalk", "corp-a", 300), ("dingtalk", "corp-a", 0), ("azure", "graph", 300)]
    stop = threading.Event()
    handed: list[tuple[str, float, int]] = []  # (token, the client's now, min_ttl)
    failures: list[BaseException] = []

    def ticker() -> None:
        while not stop.is_set():
            clock.advance(5)
            time.sleep(0.001)

    def worker(index: int) -> None:
        try:
            for i in range(400):
                provider, connection, min_ttl = keys[(index + i) % len(keys)]
                token = client.get_token(provider, connection, min_ttl=min_ttl)
                handed.append((token, clock.seen(), min_ttl))
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    # When
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    tick = threading.Thread(target=ticker)
    tick.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    tick.join(10)
    # Then
    assert failures == []
    assert len(handed) == 16 * 400
    assert service.most_in_flight == 1, "two requests for one key at once"
    expired = [(t, now) for t, now, _ in handed if service.expiry[t] <= now]
    assert expired == [], f"{len(expired)} tokens handed out after they expired"
    # and the memory did its work: far fewer requests than calls
    assert service.total_calls() < len(handed) / 2


def test_an_answer_overtaken_by_a_refresh_does_not_replace_it_in_memory() -> None:
    # Given a get whose answer (the current token, tok-1) is slow to come back
    clock = Clock()
    service = Service(clock)
    client = client_for(service, clock, margin=60)
    service._issue(("dingtalk", "corp-a"), clock.now)  # tok-1
    release = threading.Event()
    service.hold_answers = release
    got: list[str] = []
    slow = threading.Thread(target=lambda: got.append(client.get_token("dingtalk", "corp-a")))
    slow.start()
    try:
        assert service.holding.wait(10)
        # When a refresh asked for later (the target refused tok-1) replaces it meanwhile
        service.hold_answers = None
        clock.advance(1)
        assert client.refresh("dingtalk", "corp-a")["access_token"] == "tok-2"
    finally:
        # and only then the slow answer arrives
        release.set()
        slow.join(10)
    # Then the slow caller got what the API gave it, but the memory keeps the newer token
    assert got == ["tok-1"]
    calls = service.total_calls()
    assert client.get_token("dingtalk", "corp-a") == "tok-2"
    assert service.total_calls() == calls
