"""Lab syslog sink: what a site's SIEM would receive, as one message per line in a file.

Run as ``python -m appliance.lab.sinks --listen 10.10.0.2 --out .lab/logs/syslog.log``. It
receives syslog messages over UDP (``--udp-port``, 514), TCP (``--tcp-port``, 514) and,
given ``--cert``/``--key``, TLS (``--tls-port``, 6514). On TCP and TLS both framings of
RFC 6587 are accepted: octet counting (``<length> <message>``, what RFC 5425 requires for
TLS) and non-transparent framing (messages ending in LF). Each message is appended to the
output file as it came, on one line: trailing CR/LF/NUL removed, any LF inside it written
as the two characters ``\\n``, bytes that are not UTF-8 replaced. The file is flushed after
every message, so a test or ``tail -f`` sees it at once. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from pathlib import Path
from typing import IO

log = logging.getLogger("syslog-sink")

MAX_FRAME = 64 * 1024  # longer octet-counted frames are a framing error: the peer is dropped


class FramingError(ValueError):
    """The TCP stream is not syslog in either RFC 6587 framing."""


def split_frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete messages at the start of a TCP stream buffer, and the incomplete rest.

    A frame starting with a digit is octet-counted (``MSG-LEN SP MSG``); anything else
    runs up to the next LF. RFC 5424 messages start with ``<``, never with a digit.
    """
    out: list[bytes] = []
    while buffer:
        if buffer[:1].isdigit():
            space = buffer.find(b" ", 0, 8)
            if space < 0:
                if len(buffer) >= 8 or not buffer.isdigit():
                    raise FramingError(f"bad octet count {buffer[:8]!r}")
                break
            count_text = buffer[:space]
            if not count_text.isdigit():
                raise FramingError(f"bad octet count {count_text!r}")
            count = int(count_text)
            if not 1 <= count <= MAX_FRAME:
                raise FramingError(f"octet count {count} outside 1..{MAX_FRAME}")
            end = space + 1 + count
            if len(buffer) < end:
                break
            out.append(buffer[space + 1 : end])
            buffer = buffer[end:]
        else:
            newline = buffer.find(b"\n")
            if newline < 0:
                if len(buffer) > MAX_FRAME:
                    raise FramingError(f"no LF within {MAX_FRAME} bytes")
                break
            out.append(buffer[:newline])
            buffer = buffer[newline + 1 :]
    return [m for m in out if m.strip(b"\r\n\0")], buffer


def as_line(message: bytes) -> str:
    """One message as one line of the output file (without the line end)."""
    text = message.rstrip(b"\r\n\0").decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\n", "\\n")


class Sink:
    """The output file, shared by every listener."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.count = 0

    def write(self, message: bytes) -> None:
        self.out.write(as_line(message) + "\n")
        self.out.flush()
        self.count += 1


class UdpSyslog(asyncio.DatagramProtocol):
    """One datagram is one message (RFC 5426)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.strip(b"\r\n\0"):
            self.sink.write(data)


def stream_handler(sink: Sink, transport: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        where = f"{transport} {peer[0]}:{peer[1]}" if peer else transport
        log.info("%s: connected", where)
        buffer = b""
        try:
            while chunk := await reader.read(65536):
                messages, buffer = split_frames(buffer + chunk)
                for message in messages:
                    sink.write(message)
        except FramingError as exc:
            log.warning("%s: %s; closing the connection", where, exc)
        except (OSError, ssl.SSLError) as exc:
            log.warning("%s: %s", where, exc)
        finally:
            if buffer.strip(b"\r\n\0") and not buffer[:1].isdigit():
                sink.write(buffer)  # a last LF-framed message without its LF
            writer.close()
            log.info("%s: closed", where)

    return handle


async def serve(args: argparse.Namespace) -> None:
    """Listen on every configured port until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as out:
        sink = Sink(out)
        udp, _ = await loop.create_datagram_endpoint(
            lambda: UdpSyslog(sink), local_addr=(args.listen, args.udp_port)
        )
        servers = [
            await asyncio.start_server(stream_handler(sink, "tcp"), args.listen, args.tcp_port)
        ]
        ports = [f"udp/{args.udp_port}", f"tcp/{args.tcp_port}"]
        if args.cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(args.cert, args.key)
            servers.append(
                await asyncio.start_server(
                    stream_handler(sink, "tls"), args.listen, args.tls_port, ssl=ctx
                )
            )
            ports.append(f"tls/{args.tls_port}")
        log.info("ready: %s on %s, writing %s", ", ".join(ports), args.listen, args.out)
        try:
            await stop.wait()
        finally:
            udp.close()
            for server in servers:
                server.close()
    log.info("stopped after %d message(s)", sink.count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.lab.sinks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--listen", default="0.0.0.0", help="address to listen on (0.0.0.0)")
    parser.add_argument("--udp-port", type=int, default=514)
    parser.add_argument("--tcp-port", type=int, default=514)
    parser.add_argument("--tls-port", type=int, default=6514)
    parser.add_argument("--cert", help="server certificate (PEM) for TLS")
    parser.add_argument("--key", help="its private key (PEM)")
    parser.add_argument("--out", required=True, help="file the messages are appended to")
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    for name in ("udp_port", "tcp_port", "tls_port"):
        if not 1 <= getattr(args, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')}: must be 1-65535")
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(args))
    except (OSError, ssl.SSLError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
