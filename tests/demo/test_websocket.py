"""The RFC 6455 pieces of the simulator's WebSocket echo."""
import pytest

from demo.websocket import FrameDecoder, FrameError, accept_key, encode_frame, valid_key


def test_accept_key_matches_the_rfc_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert valid_key("dGhlIHNhbXBsZSBub25jZQ==") and not valid_key("c2hvcnQ=") and not valid_key("not base64!")


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 200_000])
@pytest.mark.parametrize("mask", [False, True])
def test_frames_round_trip_at_every_length_encoding(size, mask):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = encode_frame(0x2, payload, mask=mask)
    assert FrameDecoder().feed(frame) == [(True, 0x2, payload)]


def test_the_decoder_waits_for_complete_frames_fed_byte_by_byte():
    data = encode_frame(0x1, b"hello", mask=True) + encode_frame(0x1, b"world", mask=True, fin=False)
    decoder, frames = FrameDecoder(), []
    for byte in data:
        frames += decoder.feed(bytes([byte]))
    assert frames == [(True, 0x1, b"hello"), (False, 0x1, b"world")]


def test_an_oversized_frame_is_refused():
    with pytest.raises(FrameError):
        FrameDecoder().feed(bytes([0x82, 127]) + (10**9).to_bytes(8, "big"))
