"""HTTP/3 requests for `cargo xtask conformance-h3`, on aioquic, with the fields exactly as
given (uppercase names, connection-specific fields and pseudo-field order included).

Usage: python3 h3client.py SPEC.json

SPEC: {"host", "port", "server_name", "timeout", "out",
       "requests": [{"headers": [[name, value], ...], "body_file": path or null,
                     "trailers": [[name, value], ...] or null}]}

Every request goes on its own stream of one connection, all at once. Output, one record per
line, tab-separated, with backslash, tab, CR and LF escaped in the last field:
    H i              a field section starts on request i's stream
    F i name value   one field of it
    B i length       request i's response body, saved as OUT/body-i.bin
    E i              the stream ended cleanly
    R i code         the server reset the stream
    C code reason    the connection was closed
    X message        the client failed
"""

import asyncio
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


def escape(text):
    return (
        text.replace("\\", "\\\\")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
        .replace("\n", "\\n")
    )


def emit(*parts):
    print("\t".join(str(p) for p in parts[:-1]) + "\t" + escape(str(parts[-1])), flush=True)


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.index = {}
        self.bodies = {}
        self.finished = {}

    def _finish(self, stream_id):
        done = self.finished.get(stream_id)
        if done is not None and not done.done():
            done.set_result(None)

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self.index:
            emit("R", self.index[event.stream_id], event.error_code)
            self._finish(event.stream_id)
        elif isinstance(event, ConnectionTerminated):
            emit("C", event.error_code, event.reason_phrase or "")
            for stream_id in list(self.finished):
                self._finish(stream_id)
        for h3_event in self.http.handle_event(event):
            i = self.index.get(getattr(h3_event, "stream_id", None))
            if i is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                emit("H", i)
                for name, value in h3_event.headers:
                    emit("F", i, name.decode("latin-1"), value.decode("latin-1"))
            elif isinstance(h3_event, DataReceived):
                self.bodies[h3_event.stream_id] += h3_event.data
            if h3_event.stream_ended:
                emit("E", i)
                self._finish(h3_event.stream_id)

    def start(self, i, request):
        stream_id = self._quic.get_next_available_stream_id()
        self.index[stream_id] = i
        self.bodies[stream_id] = bytearray()
        self.finished[stream_id] = asyncio.get_running_loop().create_future()
        encode = lambda fields: [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]
        body = b""
        if request.get("body_file"):
            with open(request["body_file"], "rb") as f:
                body = f.read()
        trailers = request.get("trailers")
        self.http.send_headers(
            stream_id, encode(request["headers"]), end_stream=not body and not trailers
        )
        if body:
            self.http.send_data(stream_id, body, end_stream=not trailers)
        if trailers:
            self.http.send_headers(stream_id, encode(trailers), end_stream=True)
        self.transmit()
        return stream_id


async def main(spec):
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        verify_mode=ssl.CERT_NONE,
        server_name=spec["server_name"],
        idle_timeout=spec["timeout"],
    )
    async with connect(
        spec["host"],
        spec["port"],
        configuration=configuration,
        create_protocol=Client,
        wait_connected=True,
    ) as client:
        streams = [client.start(i, r) for i, r in enumerate(spec["requests"])]
        await asyncio.gather(*(client.finished[s] for s in streams))
        for stream_id in streams:
            i = client.index[stream_id]
            with open(f"{spec['out']}/body-{i}.bin", "wb") as f:
                f.write(client.bodies[stream_id])
            emit("B", i, len(client.bodies[stream_id]))


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    try:
        asyncio.run(asyncio.wait_for(main(spec), spec["timeout"]))
    except Exception as error:  # reported to the suite, which judges it
        emit("X", f"{type(error).__name__}: {error}")
        sys.exit(1)
