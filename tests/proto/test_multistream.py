"""multistream-select 1.0: dialer and listener state machines, no event loop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastp2p.errors import (
    FrameError,
    FrameTooLargeError,
    LocalProtocolError,
    NegotiationError,
    RemoteProtocolError,
    VarintError,
)
from fastp2p.proto.multistream import (
    PROTOCOL_ID,
    MultistreamDialer,
    MultistreamListener,
    decode_ls_response,
    encode_ls_response,
    encode_message,
    first_flight,
    select_first_flight,
)

HEADER = b"\x13/multistream/1.0.0\n"


def transfer(a, b) -> int:
    """Move everything ``a`` wants to send into ``b``; returns the byte count."""
    data = a.data_to_send()
    if data:
        b.receive_data(data)
    return len(data)


def run(dialer, listener, rounds: int = 200) -> None:
    for _ in range(rounds):
        moved = transfer(dialer, listener) + transfer(listener, dialer)
        if not moved:
            return


def test_interop_vectors() -> None:
    assert encode_message(PROTOCOL_ID) == HEADER
    assert encode_message("na") == bytes.fromhex("036e610a")
    assert encode_message("ls") == bytes.fromhex("036c730a")


def test_dialer_pipelines_header_and_first_proposal() -> None:
    d = MultistreamDialer(["/yamux/1.0.0", "/mplex/6.7.0"])
    assert d.data_to_send() == HEADER + b"\x0d/yamux/1.0.0\n"
    assert d.data_to_send() == b""
    assert not d.done and d.selected is None


def test_simple_success() -> None:
    d = MultistreamDialer(["/ipfs/kad/1.0.0"])
    listener = MultistreamListener({"/ipfs/kad/1.0.0"})
    d_out = d.data_to_send()
    listener.receive_data(d_out)
    assert listener.done and listener.selected == "/ipfs/kad/1.0.0"
    l_out = listener.data_to_send()
    # responder sends its header and answer in the same packet
    assert l_out == HEADER + encode_message("/ipfs/kad/1.0.0")
    d.receive_data(l_out)
    assert d.done and d.selected == "/ipfs/kad/1.0.0"
    assert d.unused_data() == b"" and listener.unused_data() == b""


def test_na_then_success() -> None:
    d = MultistreamDialer(["/ipfs/kad/1.0.0", "/ipfs/kad/0.2.3"])
    listener = MultistreamListener(["/ipfs/kad/0.2.3"])
    listener.receive_data(d.data_to_send())
    assert listener.data_to_send() == HEADER + b"\x03na\n"
    d.receive_data(HEADER + b"\x03na\n")
    assert d.data_to_send() == encode_message("/ipfs/kad/0.2.3")
    d.receive_data(b"")
    listener.receive_data(encode_message("/ipfs/kad/0.2.3"))
    assert listener.selected == "/ipfs/kad/0.2.3"
    transfer(listener, d)
    assert d.done and d.selected == "/ipfs/kad/0.2.3"
    assert listener.offered == ("/ipfs/kad/1.0.0",)


def test_none_supported() -> None:
    d = MultistreamDialer(["/a", "/b"])
    listener = MultistreamListener(["/c"])
    with pytest.raises(NegotiationError) as info:
        run(d, listener)
    assert info.value.offered == ("/a", "/b")
    assert not d.done and d.selected is None
    with pytest.raises(LocalProtocolError):
        d.receive_data(b"x")


def test_predicate_listener() -> None:
    d = MultistreamDialer(["/x/2", "/x/1"])
    listener = MultistreamListener(lambda p: p.startswith("/x/1"))
    run(d, listener)
    assert d.selected == listener.selected == "/x/1"


@pytest.mark.parametrize("split", range(1, 60))
def test_every_split_point(split: int) -> None:
    d = MultistreamDialer(["/no", "/proto/1"])
    listener = MultistreamListener(["/proto/1"])
    stream = d.data_to_send()
    # Listener receives the dialer's opening bytes cut at `split`.
    for chunk in (stream[:split], stream[split:]):
        listener.receive_data(chunk)
    reply = listener.data_to_send()
    for i in range(len(reply) + 1):
        d2 = MultistreamDialer(["/no", "/proto/1"])
        d2.data_to_send()
        d2.receive_data(reply[:i])
        d2.receive_data(reply[i:])
        assert not d2.done
        assert d2.data_to_send() == encode_message("/proto/1")
    d.receive_data(reply)
    second = d.data_to_send() + b"APPDATA"
    cut = min(split, len(second))
    listener.receive_data(second[:cut])
    listener.receive_data(second[cut:])
    assert listener.done and listener.selected == "/proto/1"
    assert listener.unused_data() == b"APPDATA"
    final = listener.data_to_send() + b"reply-bytes"
    cut = min(split, len(final))
    d.receive_data(final[:cut])
    d.receive_data(final[cut:])
    assert d.done and d.selected == "/proto/1"
    assert d.unused_data() == b"reply-bytes"


def test_byte_by_byte() -> None:
    d = MultistreamDialer(["/a", "/b", "/c"])
    listener = MultistreamListener(["/c"])
    for _ in range(10):
        for src, dst in ((d, listener), (listener, d)):
            for byte in src.data_to_send():
                dst.receive_data(bytes([byte]))
    assert d.selected == listener.selected == "/c"


def test_unused_data_after_confirm_and_later() -> None:
    d = MultistreamDialer(["/p"])
    listener = MultistreamListener(["/p"])
    listener.receive_data(d.data_to_send() + b"early")
    assert listener.unused_data() == b"early"
    assert listener.unused_data() == b""
    listener.receive_data(b"more")
    assert listener.unused_data() == b"more"
    d.receive_data(listener.data_to_send() + b"hello")
    assert d.unused_data() == b"hello"


def test_lazy_dialer() -> None:
    d = MultistreamDialer(["/p"], lazy=True)
    assert d.selected == "/p" and not d.done
    listener = MultistreamListener(["/p"])
    listener.receive_data(d.data_to_send() + b"app")
    assert listener.unused_data() == b"app"
    d.receive_data(listener.data_to_send())
    assert d.done


def test_lazy_dialer_refused() -> None:
    d = MultistreamDialer(["/p"], lazy=True)
    listener = MultistreamListener(["/q"])
    listener.receive_data(d.data_to_send())
    with pytest.raises(NegotiationError):
        d.receive_data(listener.data_to_send())
    with pytest.raises(LocalProtocolError):
        MultistreamDialer(["/p", "/q"], lazy=True)


def test_local_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        MultistreamDialer([])
    with pytest.raises(LocalProtocolError):
        MultistreamDialer(["/bad\nid"])
    with pytest.raises(LocalProtocolError):
        MultistreamDialer(["na"])
    with pytest.raises(LocalProtocolError):
        MultistreamDialer(["/" + "x" * 1024])
    with pytest.raises(LocalProtocolError):
        encode_message("x" * 1024)
    assert len(encode_message("x" * 1023)) == 2 + 1024


def test_ls() -> None:
    protos = ["/ipfs/kad/0.2.3", "/ipfs/kad/1.0.0", "/ipfs/bitswap/1.0.0"]
    listener = MultistreamListener(protos)
    listener.receive_data(HEADER + encode_message("ls"))
    out = listener.data_to_send()
    assert out.startswith(HEADER)
    body = b"".join(encode_message(p) for p in protos) + b"\n"
    assert out[len(HEADER) :] == bytes([len(body)]) + body
    assert out.endswith(b"\n\n")
    assert decode_ls_response(body) == protos
    assert not listener.done
    listener.receive_data(encode_message("/ipfs/kad/1.0.0"))
    assert listener.selected == "/ipfs/kad/1.0.0"


def test_ls_empty_and_large() -> None:
    assert encode_ls_response([]) == b"\x01\n"
    assert decode_ls_response(b"\n") == []
    many = [f"/proto/{i:04d}" for i in range(200)]
    enc = encode_ls_response(many)
    listener = MultistreamListener(many)
    listener.receive_data(HEADER + b"\x03ls\n")
    assert listener.data_to_send() == HEADER + enc
    with pytest.raises(FrameError):
        decode_ls_response(b"\x05/abc")
    with pytest.raises(FrameError):
        decode_ls_response(b"\x09/abc\n\n")


def test_too_many_na() -> None:
    listener = MultistreamListener(["/real"])
    listener.receive_data(HEADER)
    for i in range(64):
        listener.receive_data(encode_message(f"/fake/{i}"))
    with pytest.raises(NegotiationError) as info:
        listener.receive_data(encode_message("/fake/64"))
    assert len(info.value.offered) == 65
    assert info.value.supported == ("/real",)


def test_wrong_header() -> None:
    listener = MultistreamListener(["/p"])
    with pytest.raises(NegotiationError):
        listener.receive_data(encode_message("/multistream/2.0.0"))
    d = MultistreamDialer(["/p"])
    with pytest.raises(NegotiationError):
        d.receive_data(encode_message("/http/1.1"))


def test_unexpected_answer() -> None:
    d = MultistreamDialer(["/p"])
    with pytest.raises(RemoteProtocolError):
        d.receive_data(HEADER + encode_message("/other"))


@pytest.mark.parametrize(
    ("data", "exc"),
    [
        (b"\x81\x08" + b"x" * 1025, FrameTooLargeError),  # length 1025
        (b"\xff\xff", FrameTooLargeError),  # incomplete but already too large
        (b"\x80\x00", VarintError),  # non-minimal varint
        (b"\x00", FrameError),  # empty message
        (b"\x03abc", FrameError),  # no newline
        (b"\x03\xff\xfe\n", FrameError),  # invalid UTF-8
        (b"GET / HTTP/1.1\r\n" * 10, FrameError),
    ],
)
def test_garbage(data: bytes, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        MultistreamListener(["/p"]).receive_data(data)
    d = MultistreamDialer(["/p"])
    with pytest.raises(exc):
        d.receive_data(data)
    assert issubclass(exc, RemoteProtocolError)


def test_max_length_message_accepted() -> None:
    listener = MultistreamListener(["/p"])
    listener.receive_data(HEADER)
    line = "/" + "a" * 1022
    listener.receive_data(encode_message(line))
    assert listener.data_to_send().endswith(b"\x03na\n")


def test_incomplete_stays_pending() -> None:
    listener = MultistreamListener(["/p"])
    listener.receive_data(HEADER[:5])
    assert listener.data_to_send() == b"" and not listener.done
    listener.receive_data(HEADER[5:] + b"\x03/p")
    assert listener.data_to_send() == HEADER
    listener.receive_data(b"\n")
    assert listener.done


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_only_protocol_errors(data: bytes) -> None:
    for make in (lambda: MultistreamListener(["/p"]), lambda: MultistreamDialer(["/p"])):
        side = make()
        try:
            side.receive_data(data)
        except (RemoteProtocolError, NegotiationError):
            pass


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), min_size=1, max_size=30), min_size=1, max_size=5, unique=True),
    st.data(),
)
def test_roundtrip_property(protos: list[str], data: st.DataObject) -> None:
    protos = [p for p in protos if p not in ("na", "ls", PROTOCOL_ID)]
    if not protos:
        return
    choice = data.draw(st.sampled_from(protos))
    d = MultistreamDialer(protos)
    listener = MultistreamListener([choice])
    run(d, listener)
    assert d.selected == listener.selected == choice


def test_incomplete_foreign_first_bytes_fail_at_once() -> None:
    """A peer whose first bytes are not the header (a pnet nonce, say) is refused on the
    first wrong byte, not after waiting for a garbage-length message."""
    for side in (MultistreamDialer(["/p"]), MultistreamListener(["/p"])):
        side.receive_data(HEADER[:7])  # a correct prefix: keep waiting
        with pytest.raises(NegotiationError, match="private network"):
            side.receive_data(b"\x00xyz")  # still incomplete, but already wrong
    with pytest.raises(NegotiationError):
        MultistreamListener(["/p"]).receive_data(b"\x7f" + b"r" * 30)  # length 127, incomplete


def test_first_flight_is_the_lazy_proposal_and_the_accepting_answer() -> None:
    assert first_flight("/echo/1.0.0") == MultistreamDialer(["/echo/1.0.0"], lazy=True).data_to_send()
    listener = MultistreamListener(["/echo/1.0.0"])
    listener.receive_data(first_flight("/echo/1.0.0"))
    assert listener.done and listener.data_to_send() == first_flight("/echo/1.0.0")
    for reserved in ("na", "ls", PROTOCOL_ID, ""):
        with pytest.raises(LocalProtocolError):
            first_flight(reserved)


def test_select_first_flight_usual_and_refused_cases() -> None:
    accept = {"/p", "/q"}.__contains__
    assert select_first_flight(HEADER + encode_message("/p") + b"rest", accept) == ("/p", 24)
    for data in (
        HEADER + encode_message("/x"),  # not accepted: the machine answers na
        HEADER + encode_message("ls"),
        HEADER + encode_message("na"),
        HEADER + encode_message(PROTOCOL_ID),
        HEADER + encode_message("/p")[:-1],  # split line
        HEADER,
        HEADER[:-1] + b"x" + encode_message("/p"),  # another header
        HEADER + b"\x01\n",  # empty line
        HEADER + b"\x03/p!",  # no newline
        HEADER + b"\x03\xff\xfe\n",  # not UTF-8
        HEADER + encode_message("/" + "a" * 200),  # a two-byte length
        b"",
    ):
        assert select_first_flight(data, accept) is None, data


def _outcome(side: MultistreamDialer | MultistreamListener, feed: list[bytes]) -> tuple:
    """What ``side`` ends with after ``feed``: done, selected, output, leftover."""
    try:
        for part in feed:
            side.receive_data(part)
    except (RemoteProtocolError, NegotiationError):
        return ("error",)  # (which one may depend on where the bytes split)
    return (side.done, side.selected, side.data_to_send(), side.unused_data())


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.binary(max_size=80),
    st.builds(lambda p, tail: HEADER + encode_message(p) + tail,
              st.sampled_from(["/p", "/q", "/x", "ls", "na"]), st.binary(max_size=20)),
    st.builds(lambda raw, tail: HEADER + raw + tail, st.binary(min_size=1, max_size=12),
              st.binary(max_size=8)),
))
def test_select_first_flight_agrees_with_the_listener(data: bytes) -> None:
    """Where the one-step path answers, the full listener does exactly the same
    with the same bytes: same protocol, same answer, same bytes left over."""
    # the reference: the line-by-line path (a first call with one byte never takes
    # the one-step path)
    ref = _outcome(MultistreamListener(["/p", "/q"]), [data[:1], data[1:]])
    hit = select_first_flight(data, {"/p", "/q"}.__contains__)
    if hit is not None:
        proto, used = hit
        assert ref == (True, proto, first_flight(proto), data[used:])
    # the machine's own one-step path agrees with the line-by-line one whatever the bytes
    assert _outcome(MultistreamListener(["/p", "/q"]), [data]) == ref


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.binary(max_size=80),
    st.builds(lambda p, tail: HEADER + encode_message(p) + tail,
              st.sampled_from(["/p", "/q", "na", "ls"]), st.binary(max_size=20)),
))
def test_dialer_first_flight_agrees_with_the_line_by_line_path(data: bytes) -> None:
    def dialer() -> MultistreamDialer:
        d = MultistreamDialer(["/p", "/q"])
        d.data_to_send()
        return d

    assert _outcome(dialer(), [data]) == _outcome(dialer(), [data[:1], data[1:]])
