"""Token verification throughput beside the raw Ed25519 limit.

Prints, from one run: bare Ed25519 verifies/s (cryptography, over a message
the size of a token's Sig_structure), full ``verify_token`` verifications/s
(strict decode, header checks, signature, claims) and their ratio (goal: at
least 80%). The two are measured in short paired rounds, back to back, after
a warm-up; the ratio is the median of the rounds' ratios (and, for
reference, the ratio of the fastest round of each).

    python bench/bench_verify.py [--seconds 1.0] [--repeat 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script from a checkout: make the project importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from protocol.cose import decode_sign1  # noqa: E402
from protocol.keys import key_id, public_bytes  # noqa: E402
from protocol.keyset import KeySet  # noqa: E402
from protocol.token import MAX_TOKEN_BYTES, Claims, Feature, issue_token, verify_token  # noqa: E402

NOW = 1_760_000_000
DEVICE_ID = "gw-0001"
GOAL = 0.80


def _key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())


def _typical_token(signer: Ed25519PrivateKey) -> bytes:
    """A token as the cloud issues it: every claim, three features, one with parameters."""
    claims = Claims(
        sub=DEVICE_ID,
        iat=NOW - 60,
        exp=NOW + 14 * 86400,
        cti=bytes(range(16)),
        ver=42,
        ent={
            "remote_access": Feature(until=NOW + 30 * 86400),
            "voice_control": Feature(until=NOW + 30 * 86400),
            "video_retention": Feature(until=NOW + 365 * 86400, params={"days": 30}),
        },
        nbf=NOW - 60,
        iss="entitle",
        aud="entitle",
        inst="inst-0001",
    )
    return issue_token(claims, signer, kid=key_id(public_bytes(signer)))


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    batch, calls = 64, 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


BURST = 128


def _burst(fn: Callable[[], object]) -> float:
    """Seconds for BURST calls of ``fn``."""
    start = time.perf_counter()
    for _ in range(BURST):
        fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="length of each timed repetition"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="repetitions per measurement (median)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print where verify_token spends time"
    )
    args = parser.parse_args(argv)

    signer = _key("bench/token-key")
    public = signer.public_key()
    keyset = KeySet.create(
        version=1,
        threshold=1,
        root=[public_bytes(_key("bench/root"))],
        token=[public_bytes(signer)],
    )
    token = _typical_token(signer)
    msg = decode_sign1(token, max_size=MAX_TOKEN_BYTES)
    to_be_signed, signature = msg.to_be_signed(), msg.signature

    def bare() -> None:
        public.verify(signature, to_be_signed)

    def full() -> None:
        verify_token(token, key_for=keyset.token_key, device_id=DEVICE_ID, now=NOW)

    full()  # it must accept the token, or the figure means nothing
    _rate(bare, min(0.5, args.seconds / 2))  # warm-up
    _rate(full, min(0.5, args.seconds / 2))
    # Paired rounds: a short burst of each, back to back, many times. Each
    # round's ratio compares the two under the same machine conditions; the
    # median of the rounds is robust to a shared, noisy host, where whole
    # seconds of one then the other drift apart by 10-20%.
    rounds = max(20, int(args.repeat * args.seconds * 40))
    bare_times, full_times, ratios = [], [], []
    for _ in range(rounds):
        t_bare = _burst(bare)
        t_full = _burst(full)
        bare_times.append(t_bare)
        full_times.append(t_full)
        ratios.append(t_bare / t_full)
    bare_rate = BURST / statistics.median(bare_times)
    full_rate = BURST / statistics.median(full_times)
    ratio = statistics.median(ratios)
    best_ratio = min(bare_times) / min(full_times)

    sizes = f"Sig_structure {len(to_be_signed)} bytes, payload {len(msg.payload)} bytes"
    print(f"token: {len(token)} bytes ({sizes})")
    print(f"timing: {rounds} paired rounds of {BURST} calls each, median, after warm-up")
    rows = [
        ("bare Ed25519 verify (cryptography)", bare_rate),
        ("verify_token (decode+headers+sig+claims)", full_rate),
    ]
    for label, rate in rows:
        print(f"{label:42s} {rate:9,.0f} /s {1e6 / rate:8.1f} us each")
    print(
        f"overhead over the signature check: {1e6 / full_rate - 1e6 / bare_rate:.1f} us per token"
    )
    print(f"ratio of the fastest rounds (least disturbed): {best_ratio:.1%}")
    verdict = "meets" if ratio >= GOAL else "below"
    print(
        f"ratio (median of paired rounds): {ratio:.1%} of bare Ed25519 "
        f"({verdict} the {GOAL:.0%} goal)"
    )

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(20_000):
            full()
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
