#!/usr/bin/env python3
"""Traffic profile of recorded VNC console sessions, and what permessage-deflate would save.

    python3 scripts/console-traffic.py [--skip-seconds 2] [--json FILE] RECORDING.js ...

Each RECORDING is a ws-proxy session recording in noVNC's player format
(`var VNC_frame_data = ['{TS{bytes', '}TS}bytes', ..., 'EOF'];`): `{` entries are the server's
(VM -> browser) WebSocket messages, `}` entries the client's, TS milliseconds since the session
started, the bytes a latin1 JavaScript string literal. e2e/record-traffic.mjs makes them (with
`--record-client-input`, else there are no client entries). Python 3 standard library only.

For each recording (its mix is the file name without `.js`) it prints markdown tables:

* the steady state: the window from `--skip-seconds` (default 2) after the first server message
  holding a FramebufferUpdate to the last recorded message; everything before it (handshake,
  first full update, the guest booting) is left out of the rates. Messages/s, bytes/s (WebSocket
  payloads), message size percentiles (nearest rank), RFB updates and update requests per second,
  key-downs per second (RFB KeyEvent and QEMU extended key event with the down flag set);
* for sessions with key-downs: the bytes of server messages in the 100 ms after each key-down
  ("echo bytes") and the time from a key-down to the next server message, both as recorded (the
  proxy's clock, between its two legs);
* the encodings: the client's SetEncodings and, from a parse of the server's RFB stream
  (Raw, CopyRect, RRE, Hextile, Zlib, Tight, TightPNG, ZRLE rectangles and the pseudo-encodings
  QEMU sends, skipped by their length fields, never decompressed), the rectangles of each
  encoding; if the parse meets something it does not know it says where and falls back to the
  first rectangle header of each message that starts with a FramebufferUpdate;
* permessage-deflate (RFC 7692) for each direction and both together, for the whole session and
  the steady window: the bytes on the wire as WebSocket frames (payload plus a 2/4/10-byte header,
  plus the 4-byte mask from the client) without deflate and with it: one persistent raw deflate
  stream per direction (context takeover) at levels 1 and 6 (zlib's default), and a fresh one per
  message (`*_no_context_takeover`); each message compressed and flushed with Z_SYNC_FLUSH and its
  trailing 00 00 ff ff removed (RFC 7692 section 7.2.1). The CPU cost is `time.process_time()` per
  MiB of uncompressed message bytes, for compressing and for decompressing (the tail re-appended),
  each measured over whole-session repetitions until at least 0.5 s of CPU was spent.

`--json FILE` writes every number as JSON as well.
"""
import argparse
import bisect
import json
import math
import os
import re
import sys
import time
import zlib

TAIL = b"\x00\x00\xff\xff"
MIN_CPU_SECONDS = 0.5
ECHO_WINDOW_MS = 100
MODES = {  # name: (level, context takeover)
    "deflate-1": (1, True),
    "deflate-6": (6, True),
    "deflate-1-nct": (1, False),
    "deflate-6-nct": (6, False),
}
# zlib.h / zconf.h: deflate needs (1 << (windowBits + 2)) + (1 << (memLevel + 9)) bytes,
# inflate 1 << windowBits (plus about 7 KiB of state each).
MEMORY_NOTE = (
    "zlib's documented memory (zconf.h): deflate with windowBits 15 / memLevel 8 needs "
    "(1 << 17) + (1 << 17) = 256 KiB, inflate 1 << 15 = 32 KiB (each plus a few KiB of state), "
    "per direction and per session while the context is kept (context takeover); with "
    "no_context_takeover it can be freed between messages."
)

ENCODING_NAMES = {
    0: "Raw", 1: "CopyRect", 2: "RRE", 5: "Hextile", 6: "Zlib", 7: "Tight", 16: "ZRLE",
    21: "JPEG", 50: "H.264", -260: "TightPNG", -223: "DesktopSize", -224: "LastRect",
    -239: "Cursor", -257: "QEMU PointerTypeChange", -258: "QEMU ExtendedKeyEvent",
    -259: "QEMU Audio", -261: "QEMU LedState", -307: "DesktopName", -308: "ExtendedDesktopSize",
    -309: "xvp", -312: "Fence", -313: "ContinuousUpdates", -314: "AlphaCursor",
    -316: "ExtendedMouseButtons", 0x574D5664: "VMwareCursor", -0x3F5E1A32: "ExtendedClipboard",
}


# Encodings whose rectangles carry pixels (the others are pseudo-encodings).
PIXEL_ENCODINGS = {0, 1, 2, 5, 6, 7, 16, 21, 50, -260}


def encoding_name(number):
    if number in ENCODING_NAMES:
        return ENCODING_NAMES[number]
    if -32 <= number <= -23:
        return f"QualityLevel{number + 32}"
    if -256 <= number <= -247:
        return f"CompressLevel{number + 256}"
    return f"unknown({number})"


# --- the player format -----------------------------------------------------------------------

STRING = re.compile(r"'((?:[^'\\]|\\.)*)'", re.S)
ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)", re.S)
SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"', "0": "\0",
                  "b": "\b", "f": "\f", "v": "\v"}
ENTRY = re.compile(r"([{}])(\d+)\1(.*)", re.S)


def unescape(match):
    code = match.group(1)
    if code[0] in "xu" and len(code) > 1:
        return chr(int(code[1:], 16))
    return SIMPLE_ESCAPES.get(code, code)


def read_recording(path):
    """The recording's messages as (global index, 'server' | 'client', ms, bytes)."""
    with open(path, encoding="latin1") as file:
        text = file.read()
    start = text.index("VNC_frame_data")
    messages = []
    for literal in STRING.finditer(text, start):
        value = ESCAPE.sub(unescape, literal.group(1))
        if value == "EOF":
            break
        entry = ENTRY.fullmatch(value)
        if not entry:
            raise ValueError(f"{path}: unexpected entry {value[:40]!r}")
        direction = "server" if entry.group(1) == "{" else "client"
        messages.append((len(messages), direction, int(entry.group(2)),
                         entry.group(3).encode("latin1")))
    return messages


# --- RFB stream parsing ----------------------------------------------------------------------

class Truncated(Exception):
    """The stream ends inside a message (the session ended)."""


class Unknown(Exception):
    """Something the parser cannot skip."""


class Stream:
    """One direction's messages as one byte stream, positions mapped back to messages."""

    def __init__(self, messages):
        self.messages = messages
        self.data = b"".join(message[3] for message in messages)
        self.starts = []
        offset = 0
        for message in messages:
            self.starts.append(offset)
            offset += len(message[3])
        self.pos = 0

    def message_at(self, pos):
        return self.messages[bisect.bisect_right(self.starts, pos) - 1]

    def take(self, count):
        if self.pos + count > len(self.data):
            raise Truncated()
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return int.from_bytes(self.take(2), "big")

    def u32(self):
        return int.from_bytes(self.take(4), "big")

    def i32(self):
        return int.from_bytes(self.take(4), "big", signed=True)


def pixel_format(raw):
    bpp, depth, _big_endian, true_colour = raw[0], raw[1], raw[2], raw[3]
    maxes = [int.from_bytes(raw[i:i + 2], "big") for i in (4, 6, 8)]
    return {"bpp": bpp, "depth": depth, "true_colour": bool(true_colour), "maxes": maxes}


def parse_client(messages):
    """The client's RFB messages as dicts with index, ms, type and details (RFB 3.8 with
    security type None or VNC authentication), and the problem that stopped the parse or None."""
    stream = Stream(messages)
    parsed, problem = [], None
    try:
        version = stream.take(12)
        if version != b"RFB 003.008\n":
            raise Unknown(f"protocol version {version!r}")
        security = stream.u8()
        if security == 2:
            stream.take(16)
        elif security != 1:
            raise Unknown(f"security type {security}")
        stream.u8()  # ClientInit (shared flag)
        while stream.pos < len(stream.data):
            start = stream.pos
            index, _, ms, _ = stream.message_at(start)
            kind = stream.u8()
            item = {"index": index, "ms": ms, "type": kind}
            if kind == 0:
                stream.take(3)
                item["format"] = pixel_format(stream.take(16))
            elif kind == 2:
                stream.take(1)
                item["encodings"] = [stream.i32() for _ in range(stream.u16())]
            elif kind == 3:
                item["incremental"] = bool(stream.u8())
                stream.take(8)
            elif kind == 4:
                item["down"] = bool(stream.u8())
                stream.take(2)
                item["keysym"] = stream.u32()
            elif kind == 5:
                stream.take(5)
            elif kind == 6:
                stream.take(3)
                stream.take(abs(int.from_bytes(stream.take(4), "big", signed=True)))
            elif kind == 248:
                stream.take(7)
                stream.take(stream.u8())
            elif kind == 250:
                stream.take(9)
            elif kind == 251:
                stream.take(5)
                screens = stream.u8()
                stream.take(1 + 16 * screens)
            elif kind == 255:
                subtype = stream.u8()
                if subtype == 0:
                    item["down"] = bool(stream.u16())
                    item["keysym"] = stream.u32()
                    stream.take(4)  # the keycode
                elif subtype == 1:
                    operation = stream.u16()
                    stream.take(6 if operation == 2 else 0)
                else:
                    raise Unknown(f"QEMU client message subtype {subtype}")
                item["subtype"] = subtype
            else:
                raise Unknown(f"client message type {kind}")
            item["bytes"] = stream.pos - start
            parsed.append(item)
    except Truncated:
        pass
    except Unknown as error:
        problem = f"{error} at client byte {stream.pos}"
    return parsed, problem


def compact_length(stream):
    """Tight's 1-3 byte length: 7 bits a byte, low bits first, the high bit says more follow
    (the third byte's 8 bits all count)."""
    length, shift, byte = 0, 0, 0x80
    while byte & 0x80 and shift < 14:
        byte = stream.u8()
        length |= (byte & 0x7F) << shift
        shift += 7
    if byte & 0x80:
        length |= stream.u8() << 14
    return length


def skip_tight(stream, width, height, bytes_per_pixel, png):
    tpixel = 3 if bytes_per_pixel == 4 else bytes_per_pixel
    control = stream.u8() >> 4
    if control == 0x8:
        stream.take(tpixel)
        return "fill"
    if control == 0x9 or (png and control == 0xA):
        stream.take(compact_length(stream))
        return "jpeg" if control == 0x9 else "png"
    if control > 0x7:
        raise Unknown(f"Tight compression control {control:#x}")
    filter_id = stream.u8() if control & 0x4 else 0
    if filter_id == 0:
        size, name = width * height * tpixel, "copy"
    elif filter_id == 1:
        colours = stream.u8() + 1
        stream.take(colours * tpixel)
        size = ((width + 7) // 8) * height if colours == 2 else width * height
        name = "palette"
    elif filter_id == 2:
        size, name = width * height * tpixel, "gradient"
    else:
        raise Unknown(f"Tight filter {filter_id}")
    stream.take(size if size < 12 else compact_length(stream))
    return name


def skip_hextile(stream, width, height, bytes_per_pixel):
    for tile_y in range(0, height, 16):
        for tile_x in range(0, width, 16):
            tile_w, tile_h = min(16, width - tile_x), min(16, height - tile_y)
            flags = stream.u8()
            if flags & 1:
                stream.take(tile_w * tile_h * bytes_per_pixel)
                continue
            stream.take(bytes_per_pixel * (((flags >> 1) & 1) + ((flags >> 2) & 1)))
            if flags & 8:
                subrects = stream.u8()
                stream.take(subrects * (2 + (bytes_per_pixel if flags & 16 else 0)))


def skip_rect(stream, encoding, width, height, bytes_per_pixel):
    """Skips one rectangle's body; returns a sub-kind (Tight) or None. Returns 'last' for LastRect."""
    if encoding == 0:
        stream.take(width * height * bytes_per_pixel)
    elif encoding == 1:
        stream.take(4)
    elif encoding == 2:
        count = stream.u32()
        stream.take(bytes_per_pixel + count * (bytes_per_pixel + 8))
    elif encoding == 5:
        skip_hextile(stream, width, height, bytes_per_pixel)
    elif encoding in (6, 16):
        stream.take(stream.u32())
    elif encoding in (7, -260):
        return skip_tight(stream, width, height, bytes_per_pixel, encoding == -260)
    elif encoding == -239:
        stream.take(width * height * bytes_per_pixel + ((width + 7) // 8) * height)
    elif encoding == -314:
        stream.i32()
        stream.take(width * height * 4)
    elif encoding == -308:
        screens = stream.u8()
        stream.take(3 + 16 * screens)
    elif encoding == -307:
        stream.take(stream.u32())
    elif encoding == -261:
        stream.take(1)
    elif encoding == -224:
        return "last"
    elif encoding not in (-223, -257, -258, -259):
        raise Unknown(f"rectangle encoding {encoding}")
    return None


def parse_server(messages, client):
    """The server's RFB messages: (updates, other messages, problem or None).

    Each update is a dict with index, ms, bytes and rects [(encoding, sub-kind, w, h, bytes)].
    The pixel format is the ServerInit's until the client's SetPixelFormat (by message order).
    """
    stream = Stream(messages)
    formats = [(item["index"], item["format"]) for item in client if item["type"] == 0]
    updates, others, problem = [], {}, None
    try:
        version = stream.take(12)
        if version != b"RFB 003.008\n":
            raise Unknown(f"protocol version {version!r}")
        types = stream.take(stream.u8())
        if 1 not in types:
            if 2 not in types:
                raise Unknown(f"security types {list(types)}")
            stream.take(16)  # the VNC authentication challenge
        stream.take(4)  # SecurityResult
        stream.take(4)  # framebuffer width and height
        base_format = pixel_format(stream.take(16))
        stream.take(stream.u32())  # desktop name
        while stream.pos < len(stream.data):
            start = stream.pos
            index, _, ms, _ = stream.message_at(start)
            kind = stream.u8()
            if kind == 0:
                current = base_format
                for format_index, chosen in formats:
                    if format_index < index:
                        current = chosen
                bytes_per_pixel = current["bpp"] // 8
                stream.take(1)
                count = stream.u16()
                rects = []
                for _ in range(count):
                    rect_start = stream.pos
                    stream.take(4)
                    width, height = stream.u16(), stream.u16()
                    encoding = stream.i32()
                    sub_kind = skip_rect(stream, encoding, width, height, bytes_per_pixel)
                    rects.append((encoding, sub_kind, width, height, stream.pos - rect_start))
                    if sub_kind == "last":
                        break
                updates.append({"index": index, "ms": ms, "bytes": stream.pos - start,
                                "rects": rects})
                continue
            if kind == 1:
                stream.take(3)
                stream.take(6 * stream.u16())
            elif kind == 2:
                pass
            elif kind == 3:
                stream.take(3)
                stream.take(abs(stream.i32()))
            elif kind == 150:
                pass
            elif kind == 248:
                stream.take(7)
                stream.take(stream.u8())
            elif kind == 255:
                subtype, operation = stream.u8(), stream.u16()
                if subtype != 1:
                    raise Unknown(f"QEMU server message subtype {subtype}")
                if operation == 2:
                    stream.take(stream.u32())
            else:
                raise Unknown(f"server message type {kind}")
            others[kind] = others.get(kind, 0) + 1
    except Truncated:
        pass
    except Unknown as error:
        problem = f"{error} at server byte {stream.pos}"
    return updates, others, problem


def first_rect_encodings(messages):
    """Fallback: the first rectangle header of each server message starting with an update."""
    counts = {}
    for _, direction, _, data in messages:
        if direction == "server" and len(data) >= 16 and data[0] == 0 and data[1] == 0:
            encoding = int.from_bytes(data[12:16], "big", signed=True)
            counts[encoding] = counts.get(encoding, 0) + 1
    return counts


# --- statistics ------------------------------------------------------------------------------

def percentile(values, fraction):
    """Nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * fraction)) - 1]


def frame_bytes(payload, masked):
    header = 2 if payload < 126 else 4 if payload < 65536 else 10
    return payload + header + (4 if masked else 0)


def compress_all(payloads, level, context):
    """Compressed payloads (RFC 7692: sync-flushed, tail removed)."""
    out = []
    compressor = None
    for payload in payloads:
        if compressor is None or not context:
            compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if not data.endswith(TAIL):
            raise AssertionError("a sync flush always ends with 00 00 ff ff")
        out.append(data[:-4])
    return out


def decompress_all(compressed, context):
    out = []
    decompressor = None
    for data in compressed:
        if decompressor is None or not context:
            decompressor = zlib.decompressobj(-15)
        out.append(decompressor.decompress(data + TAIL))
    return out


def cpu_seconds_per_mib(work, total_bytes):
    """CPU seconds per MiB of `total_bytes` for `work()`, repeated for >= MIN_CPU_SECONDS."""
    if total_bytes == 0:
        return None
    rounds, start = 0, time.process_time()
    while True:
        work()
        rounds += 1
        spent = time.process_time() - start
        if spent >= MIN_CPU_SECONDS:
            return spent / rounds / (total_bytes / (1 << 20))


def deflate_study(messages, window):
    """Wire bytes without/with permessage-deflate per direction, whole session and window."""
    result = {"directions": {}, "cpu": {}}
    directions = {"server": [m for m in messages if m[1] == "server"],
                  "client": [m for m in messages if m[1] == "client"]}
    for direction, items in directions.items():
        masked = direction == "client"
        payloads = [m[3] for m in items]
        in_window = [window[0] <= m[2] <= window[1] for m in items]
        rows = {}
        plain = [frame_bytes(len(p), masked) for p in payloads]
        rows["none"] = plain
        cpu = {}
        total = sum(len(p) for p in payloads)
        for mode, (level, context) in MODES.items():
            compressed = compress_all(payloads, level, context)
            if decompress_all(compressed, context) != payloads:
                raise AssertionError(f"{mode} does not round-trip")
            rows[mode] = [frame_bytes(len(c), masked) for c in compressed]
            compress = cpu_seconds_per_mib(lambda: compress_all(payloads, level, context), total)
            cpu[mode] = {
                "compress_s_per_mib": compress,
                "decompress_s_per_mib": cpu_seconds_per_mib(
                    lambda: decompress_all(compressed, context), total),
                "compress_us_per_message": None if compress is None
                else 1e6 * compress * total / (1 << 20) / len(payloads),
            }
        result["cpu"][direction] = cpu
        result["directions"][direction] = {
            scope: {mode: sum(size for size, keep in zip(sizes, mask) if keep)
                    for mode, sizes in rows.items()}
            for scope, mask in (("session", [True] * len(items)), ("steady", in_window))
        }
        for scope in ("session", "steady"):
            mask = [True] * len(items) if scope == "session" else in_window
            result["directions"][direction][scope]["payload"] = sum(
                len(p) for p, keep in zip(payloads, mask) if keep)
    both = {}
    for scope in ("session", "steady"):
        both[scope] = {key: result["directions"]["server"][scope][key]
                       + result["directions"]["client"][scope][key]
                       for key in result["directions"]["server"][scope]}
    result["directions"]["both"] = both
    return result


def analyse(path, skip_seconds):
    messages = read_recording(path)
    server = [m for m in messages if m[1] == "server"]
    client_messages = [m for m in messages if m[1] == "client"]
    client, client_problem = parse_client(client_messages)
    updates, others, server_problem = parse_server(server, client)
    first_update_ms = updates[0]["ms"] if updates else None
    if first_update_ms is None:
        first_update_ms = next((m[2] for m in server if m[3][:1] == b"\x00"), server[0][2])
    window = (first_update_ms + round(skip_seconds * 1000), messages[-1][2])
    seconds = max(0.001, (window[1] - window[0]) / 1000)

    def inside(ms):
        return window[0] <= ms <= window[1]

    def rates(items):
        sizes = [len(m[3]) for m in items if inside(m[2])]
        return {
            "messages": len(sizes),
            "messages_per_s": len(sizes) / seconds,
            "bytes_per_s": sum(sizes) / seconds,
            "size_p50": percentile(sizes, 0.5),
            "size_p90": percentile(sizes, 0.9),
            "size_p99": percentile(sizes, 0.99),
            "size_max": max(sizes) if sizes else None,
        }

    key_events = [item for item in client if "keysym" in item]
    steady_keys = [k for k in key_events if k["down"] and inside(k["ms"])]
    steady_updates = [u["ms"] for u in updates if inside(u["ms"])]
    update_gaps = [b - a for a, b in zip(steady_updates, steady_updates[1:])]
    update_requests = [item for item in client if item["type"] == 3 and inside(item["ms"])]
    profile = {
        "recording": path,
        "recording_bytes": os.path.getsize(path),
        "session_ms": messages[-1][2],
        "first_update_ms": first_update_ms,
        "window_ms": list(window),
        "window_s": seconds,
        "server": rates(server),
        "client": rates(client_messages),
        "updates_per_s": len(steady_updates) / seconds,
        "update_interval_ms_p10": percentile(update_gaps, 0.1),
        "update_interval_ms_p50": percentile(update_gaps, 0.5),
        "update_interval_ms_p90": percentile(update_gaps, 0.9),
        "update_requests_per_s": len(update_requests) / seconds,
        "incremental_requests": sum(1 for r in update_requests if r["incremental"]),
        "key_downs": len(steady_keys),
        "key_downs_per_s": len(steady_keys) / seconds,
        "client_parse_problem": client_problem,
        "server_parse_problem": server_problem,
        "other_server_messages": {str(kind): count for kind, count in others.items()},
    }

    if steady_keys:
        echo_bytes, latency, before_release = [], [], 0
        for key in steady_keys:
            after = [m for m in server if m[0] > key["index"]]
            echo_bytes.append(sum(len(m[3]) for m in after
                                  if m[2] <= key["ms"] + ECHO_WINDOW_MS))
            if after:
                latency.append(after[0][2] - key["ms"])
                release = next((k for k in key_events if k["index"] > key["index"]
                                and not k["down"] and k["keysym"] == key["keysym"]), None)
                if release is None or after[0][0] < release["index"]:
                    before_release += 1
        profile["echo"] = {
            "bytes_p50": percentile(echo_bytes, 0.5), "bytes_p90": percentile(echo_bytes, 0.9),
            "latency_ms_p50": percentile(latency, 0.5), "latency_ms_p90": percentile(latency, 0.9),
            "no_server_message_within_100ms": sum(1 for size in echo_bytes if size == 0),
            "next_server_message_before_key_release": before_release,
        }

    set_encodings = [item["encodings"] for item in client if item["type"] == 2]
    rect_stats = {}
    for update in updates:
        for encoding, sub_kind, width, height, size in update["rects"]:
            name = encoding_name(encoding) + (f"/{sub_kind}" if sub_kind not in (None, "last") else "")
            stat = rect_stats.setdefault(
                name, {"rects": 0, "bytes": 0,
                       "pixels": 0 if encoding in PIXEL_ENCODINGS else None})
            stat["rects"] += 1
            stat["bytes"] += size
            if stat["pixels"] is not None:
                stat["pixels"] += width * height
    profile["encodings"] = {
        "client_set_encodings": [[encoding, encoding_name(encoding)] for encoding in
                                 (set_encodings[-1] if set_encodings else [])],
        "set_encodings_messages": len(set_encodings),
        "server_rects": rect_stats,
        "updates": len(updates),
        "rects_per_update_p50": percentile([len(u["rects"]) for u in updates], 0.5),
        "update_bytes_p50": percentile([u["bytes"] for u in updates], 0.5),
    }
    if server_problem:
        profile["encodings"]["first_rect_fallback"] = {
            encoding_name(encoding): count
            for encoding, count in first_rect_encodings(messages).items()}
    profile["deflate"] = deflate_study(messages, window)
    return profile


# --- output ----------------------------------------------------------------------------------

def number(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def saving(plain, compressed):
    return f"{100 * (1 - compressed / plain):.1f} %" if plain else "-"


def proxy_cpu_us_per_s(profile, mode):
    """The proxy's deflate CPU per second of session at the steady rates (None if unmeasured)."""
    cpu = profile["deflate"]["cpu"]
    compress = cpu["server"][mode]["compress_s_per_mib"]
    decompress = cpu["client"][mode]["decompress_s_per_mib"]
    if compress is None:
        return None
    return 1e6 * (compress * profile["server"]["bytes_per_s"]
                  + (decompress or 0) * profile["client"]["bytes_per_s"]) / (1 << 20)


def markdown(profile, name):
    lines = [f"## {name}", ""]
    window = profile["window_ms"]
    lines.append(
        f"`{profile['recording']}`: {number(profile['recording_bytes'])} bytes, session "
        f"{profile['session_ms'] / 1000:.1f} s; first update at {profile['first_update_ms']} ms; "
        f"steady window {window[0]}-{window[1]} ms ({profile['window_s']:.1f} s).")
    lines.append("")
    lines.append("| direction | messages | msg/s | bytes/s | size p50 | p90 | p99 | max |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, key in (("server -> client", "server"), ("client -> server", "client")):
        rates = profile[key]
        lines.append(
            f"| {label} | {rates['messages']} | {number(rates['messages_per_s'])} | "
            f"{number(rates['bytes_per_s'], 0)} | {number(rates['size_p50'])} | "
            f"{number(rates['size_p90'])} | {number(rates['size_p99'])} | "
            f"{number(rates['size_max'])} |")
    lines.append("")
    lines.append(
        f"RFB FramebufferUpdates {number(profile['updates_per_s'])}/s, FramebufferUpdateRequests "
        f"{number(profile['update_requests_per_s'])}/s ({profile['incremental_requests']} "
        f"incremental), key-downs {number(profile['key_downs_per_s'])}/s "
        f"({profile['key_downs']}). Time between updates p10/p50/p90: "
        f"{number(profile['update_interval_ms_p10'])} / {number(profile['update_interval_ms_p50'])}"
        f" / {number(profile['update_interval_ms_p90'])} ms.")
    if "echo" in profile:
        echo = profile["echo"]
        lines.append("")
        lines.append(
            f"Echo: server bytes in the {ECHO_WINDOW_MS} ms after a key-down p50 "
            f"{number(echo['bytes_p50'])}, p90 {number(echo['bytes_p90'])}; key-down to next "
            f"server message p50 {number(echo['latency_ms_p50'])} ms, p90 "
            f"{number(echo['latency_ms_p90'])} ms; key-downs with no server message within "
            f"{ECHO_WINDOW_MS} ms: {echo['no_server_message_within_100ms']}; whose next server "
            f"message came before the key's release: "
            f"{echo['next_server_message_before_key_release']} of {profile['key_downs']}.")
    for key in ("client_parse_problem", "server_parse_problem"):
        if profile[key]:
            lines.append("")
            lines.append(f"Parse stopped: {profile[key]}.")
    encodings = profile["encodings"]
    lines.append("")
    names = ", ".join(f"{n} {label}" for n, label in encodings["client_set_encodings"])
    lines.append(f"SetEncodings ({encodings['set_encodings_messages']} sent): {names}.")
    lines.append("")
    lines.append(
        f"Server rectangles over the whole session ({encodings['updates']} updates, "
        f"rects/update p50 {number(encodings['rects_per_update_p50'])}, update bytes p50 "
        f"{number(encodings['update_bytes_p50'])}):")
    lines.append("")
    lines.append("| encoding | rects | bytes | pixels |")
    lines.append("|---|---:|---:|---:|")
    for rect_name, stat in sorted(encodings["server_rects"].items(),
                                  key=lambda item: -item[1]["bytes"]):
        lines.append(f"| {rect_name} | {number(stat['rects'])} | {number(stat['bytes'])} | "
                     f"{number(stat['pixels'])} |")
    if "first_rect_fallback" in encodings:
        lines.append("")
        lines.append(f"First-rect headers (fallback): {encodings['first_rect_fallback']}.")

    deflate = profile["deflate"]
    lines.append("")
    lines.append("permessage-deflate, bytes on the wire as WebSocket frames (saving vs. none):")
    lines.append("")
    header = "| direction | scope | payload | none | " + " | ".join(MODES) + " |"
    lines.append(header)
    lines.append("|---|---|---:|---:|" + "---:|" * len(MODES))
    for direction in ("server", "client", "both"):
        for scope in ("session", "steady"):
            row = deflate["directions"][direction][scope]
            cells = " | ".join(f"{number(row[mode])} ({saving(row['none'], row[mode])})"
                               for mode in MODES)
            lines.append(f"| {direction} | {scope} | {number(row['payload'])} | "
                         f"{number(row['none'])} | {cells} |")
    lines.append("")
    lines.append(
        "CPU (Python's zlib on this machine, one core): ms per MiB of uncompressed messages "
        "to compress (and us per message) / to decompress; and the proxy's share at the steady "
        "rates (it would compress server->client and decompress client->server), in "
        "microseconds of CPU per second of session:")
    lines.append("")
    lines.append("| mode | server->client | client->server | proxy us/s |")
    lines.append("|---|---:|---:|---:|")
    for mode in MODES:
        cells = []
        for direction in ("server", "client"):
            cpu = deflate["cpu"][direction][mode]
            if cpu["compress_s_per_mib"] is None:
                cells.append("-")
            else:
                cells.append(f"{1000 * cpu['compress_s_per_mib']:.1f} "
                             f"({cpu['compress_us_per_message']:.0f} us/msg) / "
                             f"{1000 * cpu['decompress_s_per_mib']:.1f}")
        lines.append(f"| {mode} | {cells[0]} | {cells[1]} | "
                     f"{number(proxy_cpu_us_per_s(profile, mode))} |")
    lines.append("")
    return "\n".join(lines)


def summary(profiles):
    lines = ["## Summary (steady window)", ""]
    lines.append("| mix | s | S->C msg/s | S->C bytes/s | C->S msg/s | C->S bytes/s | keys/s | "
                 "updates/s | saving both ways: deflate-1 | deflate-6 | deflate-6-nct | "
                 "proxy CPU deflate-1 / -6, us/s |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, profile in profiles.items():
        both = profile["deflate"]["directions"]["both"]["steady"]
        lines.append(
            f"| {name} | {profile['window_s']:.1f} | {number(profile['server']['messages_per_s'])} | "
            f"{number(profile['server']['bytes_per_s'], 0)} | "
            f"{number(profile['client']['messages_per_s'])} | "
            f"{number(profile['client']['bytes_per_s'], 0)} | "
            f"{number(profile['key_downs_per_s'])} | {number(profile['updates_per_s'])} | "
            f"{saving(both['none'], both['deflate-1'])} | {saving(both['none'], both['deflate-6'])} | "
            f"{saving(both['none'], both['deflate-6-nct'])} | "
            f"{number(proxy_cpu_us_per_s(profile, 'deflate-1'))} / "
            f"{number(proxy_cpu_us_per_s(profile, 'deflate-6'))} |")
    lines.append("")
    lines.append(f"Memory: {MEMORY_NOTE}")
    lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recordings", nargs="+")
    parser.add_argument("--skip-seconds", type=float, default=2.0,
                        help="left out after the first update (default 2)")
    parser.add_argument("--json", help="also write every number to this file")
    args = parser.parse_args()
    profiles = {}
    for path in args.recordings:
        name = os.path.basename(path).removesuffix(".js")
        profiles[name] = analyse(path, args.skip_seconds)
    print("# Console traffic profiles\n")
    print(f"Steady window: from {args.skip_seconds:g} s after the first server message holding a "
          "FramebufferUpdate to the last recorded message. Sizes are WebSocket payload bytes.\n")
    for name, profile in profiles.items():
        print(markdown(profile, name))
    print(summary(profiles))
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"skip_seconds": args.skip_seconds, "memory_note": MEMORY_NOTE,
                       "mixes": profiles}, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
