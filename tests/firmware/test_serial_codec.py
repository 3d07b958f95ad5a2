"""protocol.serial: round trips, resynchronisation after garbage, corruption detection."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import serial as codec
from protocol.errors import BadCrc, BadFrame, FrameTooLarge, SerialFrameError

SAMPLE_BODIES: dict[codec.Op, tuple[dict[str, Any], dict[str, Any]]] = {
    codec.Op.GET_INFO: ({}, {"kind": "camera", "fw": "2.4.1", "features": {}}),
    codec.Op.GET_HEALTH: ({}, {"uptime_s": 12, "cpu_temp_c": 47.5, "disk": {"reallocated": 0}}),
    codec.Op.SET_FEATURES: (
        {"features": {"video_retention": {"days": 30, "until": 1798675200}}},
        {"applied": ["video_retention"]},
    ),
    codec.Op.SELF_TEST: ({}, {"passed": True, "hardware_fault": False, "faults": []}),
    codec.Op.GET_LOG: ({"max_bytes": 4096}, {"log": "line 1\nline 2", "truncated": False}),
    codec.Op.REBOOT: ({}, {"rebooting": True}),
}

json_leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
bodies = st.dictionaries(
    st.text(max_size=10),
    st.recursive(
        json_leaves | st.floats(allow_nan=False),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
        max_leaves=12,
    ),
    max_size=5,
)
frames = st.builds(
    codec.Frame,
    op=st.integers(0, 255),
    request_id=st.integers(0, 0xFFFF),
    kind=st.sampled_from(list(codec.FrameKind)),
    body=bodies,
)


def decode_stream(chunks: list[bytes]) -> tuple[list[codec.Frame], list[SerialFrameError]]:
    """Feed chunks to an incremental reader as a link would deliver them."""
    buffer = bytearray()
    found: list[codec.Frame] = []
    errors: list[SerialFrameError] = []
    for chunk in chunks:
        buffer += chunk
        results, consumed = codec.read_all(buffer)
        del buffer[:consumed]
        for item in results:
            (errors if isinstance(item, SerialFrameError) else found).append(item)  # type: ignore[arg-type]
    return found, errors


@pytest.mark.parametrize("op", list(codec.Op))
def test_every_op_round_trips_as_request_response_and_error(op: codec.Op) -> None:
    request_body, response_body = SAMPLE_BODIES[op]
    sent = [
        codec.request(op, 1, request_body),
        codec.response(op, 0xFFFF, response_body),
        codec.error_reply(op, 0, code=codec.ErrorCode.BAD_REQUEST, message="no"),
    ]
    for frame in sent:
        data = codec.write(frame)
        assert data[:2] == codec.SOF
        assert codec.read(data) == (frame, len(data))
        assert codec.read(data + b"\x00trailing") == (frame, len(data))
    assert sent[2].body == {"code": "bad_request", "message": "no"}
    assert codec.read(codec.write(sent[2]))[0].kind is codec.FrameKind.ERROR  # type: ignore[union-attr]


def test_crc_is_ccitt_false() -> None:
    assert codec.crc16(b"123456789") == 0x29B1  # the published check value


def test_byte_layout_is_as_documented() -> None:
    data = codec.write(codec.response(codec.Op.REBOOT, 0x1234, {}))
    assert data.hex() == "a55a01060112340001a0" + data[-2:].hex()
    assert int.from_bytes(data[-2:], "big") == codec.crc16(data[:-2])


def test_partial_frame_waits_and_garbage_before_it_is_a_typed_error() -> None:
    data = codec.write(codec.request(codec.Op.GET_INFO, 7))
    for cut in range(len(data)):
        with pytest.raises(codec.Garbage) as caught:
            codec.read(b"junk" + data[:cut])
        assert caught.value.consumed == 4 and caught.value.reason == "garbage"
        assert codec.read(data[:cut]) == (None, 0)
    with pytest.raises(codec.Garbage) as caught:
        codec.read(b"no marker\xa5")
    assert caught.value.consumed == 9  # keeps a possible first marker byte
    assert codec.read(b"\xa5") == (None, 0)


def test_oversized_length_is_refused_from_the_header_alone() -> None:
    header = struct.pack(">2sBBBHH", codec.SOF, 1, 1, 0, 1, codec.MAX_PAYLOAD + 1)
    with pytest.raises(FrameTooLarge) as caught:
        codec.read(header)  # no payload bytes at all: not waited for
    assert caught.value.consumed == 1
    assert caught.value.reason == "frame_too_large"


def test_write_refuses_a_body_over_the_limit() -> None:
    with pytest.raises(FrameTooLarge):
        codec.write(codec.response(codec.Op.GET_LOG, 1, {"log": "x" * codec.MAX_PAYLOAD}))


def test_unknown_op_decodes_so_the_firmware_can_refuse_it() -> None:
    frame, _ = codec.read(codec.write(codec.Frame(op=0x7F, request_id=3)))
    assert frame is not None and frame.op == 0x7F and not isinstance(frame.op, codec.Op)


@pytest.mark.parametrize(
    ("version", "flags", "payload", "error"),
    [
        (2, 0, b"\xa0", BadFrame),  # unknown version
        (1, 2, b"\xa0", BadFrame),  # error bit without response bit
        (1, 0x80, b"\xa0", BadFrame),  # unknown flag
        (1, 0, b"", BadFrame),  # no payload: the body is always a map
        (1, 0, b"\x80", BadFrame),  # an array, not a map
        (1, 0, b"\xa1\x01\x02", BadFrame),  # integer key
        (1, 0, b"\xa0\xa0", BadFrame),  # trailing bytes
        (1, 0, b"\xbf\xff", BadFrame),  # indefinite map
    ],
)
def test_malformed_frames_raise_typed_errors(
    version: int, flags: int, payload: bytes, error: type[SerialFrameError]
) -> None:
    header = struct.pack(">2sBBBHH", codec.SOF, version, 1, flags, 9, len(payload))
    data = header + payload + codec.crc16(header + payload).to_bytes(2, "big")
    with pytest.raises(error) as caught:
        codec.read(data)
    assert caught.value.consumed == 1


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_typed_errors_and_always_progress(data: bytes) -> None:
    try:
        frame, consumed = codec.read(data)
    except SerialFrameError as exc:
        assert 1 <= exc.consumed <= len(data)
    else:
        assert 0 <= consumed <= len(data)
        assert frame is None or consumed > 0
    results, consumed = codec.read_all(data)
    assert all(isinstance(item, codec.Frame | SerialFrameError) for item in results)
    assert consumed <= len(data)


@given(st.lists(st.binary(max_size=80) | frames.map(codec.write), max_size=6))
def test_every_byte_is_a_frame_a_typed_error_or_still_waiting(pieces: list[bytes]) -> None:
    """Nothing is skipped silently: frames + errors' ``consumed`` + what waits = the input."""
    data = b"".join(pieces)
    results, consumed = codec.read_all(data)
    in_frames = sum(len(codec.write(r)) for r in results if isinstance(r, codec.Frame))
    in_errors = sum(r.consumed for r in results if isinstance(r, SerialFrameError))
    assert in_frames + in_errors == consumed
    # what is not consumed is a possible frame start, waiting for more
    assert codec.read(data[consumed:]) == (None, 0)
    assert {type(r) for r in results if isinstance(r, SerialFrameError)} <= {
        codec.Garbage,
        BadCrc,
        BadFrame,
        FrameTooLarge,
    }


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.binary(max_size=40), frames), min_size=1, max_size=5),
    st.binary(max_size=40),
    st.lists(st.integers(1, 64), max_size=30),
)
def test_no_valid_frame_is_lost_behind_garbage(
    pieces: list[tuple[bytes, codec.Frame]], tail: bytes, cuts: list[int]
) -> None:
    stream = b"".join(garbage + codec.write(frame) for garbage, frame in pieces) + tail
    chunks, pos = [], 0
    for size in cuts:
        chunks.append(stream[pos : pos + size])
        pos += size
    chunks.append(stream[pos:])
    found, _ = decode_stream(chunks)
    assert found == [frame for _, frame in pieces]


@given(st.binary(max_size=40), st.integers(1, 64))
def test_a_false_marker_announcing_a_long_frame_does_not_hide_the_next(
    garbage: bytes, cut: int
) -> None:
    false_header = struct.pack(">2sBBBHH", codec.SOF, 1, 1, 0, 1, codec.MAX_PAYLOAD)
    frame = codec.request(codec.Op.GET_HEALTH, 42)
    stream = false_header + garbage + codec.write(frame)
    found, errors = decode_stream([stream[:cut], stream[cut:]])
    assert found == [frame]
    assert any(isinstance(error, BadFrame) for error in errors)  # the overtaken false frame


@settings(max_examples=40)
@given(frames, frames)
def test_every_single_bit_flip_is_detected(frame: codec.Frame, following: codec.Frame) -> None:
    data = codec.write(frame)
    after = codec.write(following)
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        alone, _ = decode_stream([bytes(flipped)])
        assert alone == [], f"bit {bit} flipped went unnoticed"
        both, _ = decode_stream([bytes(flipped) + after])
        assert both == [following], f"bit {bit} flipped hid the next frame"


def test_bad_crc_is_its_own_leaf() -> None:
    data = bytearray(codec.write(codec.request(codec.Op.SELF_TEST, 5)))
    data[-1] ^= 0x01
    with pytest.raises(BadCrc) as caught:
        codec.read(bytes(data))
    assert caught.value.reason == "bad_crc"


def test_self_test_schema_check() -> None:
    good = {
        "passed": False,
        "hardware_fault": True,
        "faults": [{"component": "thermal", "code": "fan_failure", "detail": "0 rpm"}],
    }
    assert codec.check_self_test(good) == good
    for bad in (
        {**good, "passed": "no"},
        {**good, "faults": {}},
        {**good, "faults": [{"component": "thermal", "code": 3, "detail": ""}]},
        {"hardware_fault": False, "faults": []},
    ):
        with pytest.raises(BadFrame):
            codec.check_self_test(bad)


def test_fault_codes_say_what_is_hardware() -> None:
    hardware = {code for code, meaning in codec.FAULT_CODES.items() if meaning.hardware}
    assert hardware == {"fan_failure", "disk_reallocated_sectors", "sensor_failure"}
    assert codec.FAULT_CODES["lens_obstructed"].action == "clean_lens"
    assert codec.FAULT_CODES["reboot_loop"].action == "firmware_update"
    assert codec.FAULT_CODES["line_noise"].action == "check_cable"
