"""``python -m firmware_stubs --kind camera [--fault overheating] [--recordings DIR]``.

Serves one emulated device on a pty, prints the port for ``entitle agent run``
or pyserial, and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import tempfile
from pathlib import Path

from firmware_stubs import KINDS, Faults, PtyFirmware, make_emulator

_DEFAULT_NOISE = 0.002
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def main(argv: list[str] | None = None) -> int:
    knobs = [field.name for field in dataclasses.fields(Faults)]
    parser = argparse.ArgumentParser(prog="python -m firmware_stubs", description=__doc__)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--fault", action="append", choices=knobs, default=[])
    parser.add_argument(
        "--noise",
        type=float,
        default=_DEFAULT_NOISE,
        help=f"fraction of bytes corrupted by --fault noisy_line (default {_DEFAULT_NOISE})",
    )
    parser.add_argument("--recordings", type=Path, help="camera recordings folder")
    parser.add_argument("--serial-number", default="EMU-000001")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    faults = Faults()
    for knob in args.fault:
        setattr(faults, knob, args.noise if knob == "noisy_line" else True)
    recordings = args.recordings
    if args.kind == "camera" and recordings is None:
        recordings = Path(tempfile.mkdtemp(prefix="entitle-camera-"))
    emulator = make_emulator(
        args.kind,
        recordings=recordings,
        serial_number=args.serial_number,
        faults=faults,
        seed=args.seed,
    )
    # The stop signals are blocked before the pty thread starts (it inherits the mask)
    # and before the port is printed (whoever reads it may stop us at once), then taken
    # by sigwait: a blocked signal stays pending until then, also when SIGINT came
    # inherited as ignored (a background job of a non-interactive shell, as CI and
    # job runners start the suite), where Python installs no KeyboardInterrupt and
    # Ctrl-C never stopped us; and signal.pause() could sleep through a signal that
    # Python had handled just before it began.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    with PtyFirmware(emulator) as firmware:
        print(firmware.port, flush=True)
        if recordings is not None:
            print(f"recordings: {recordings}", file=sys.stderr, flush=True)
        signal.sigwait(_STOP_SIGNALS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
