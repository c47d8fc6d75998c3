#!/usr/bin/env python3
"""Draws meshcall's application icon, assets/meshcall.png (256x256 RGBA).

Standard library only (zlib + struct write the PNG), so the icon can be regenerated on any
machine without an image library and the result is byte-for-byte reproducible:

    python3 packaging/make-icon.py            # writes assets/meshcall.png
    python3 packaging/make-icon.py OUT.png    # somewhere else

The picture: a rounded square with a teal-to-blue gradient, a white video camera, and three
linked dots on the camera body (a small mesh of peers). Edges are anti-aliased by 4x4
supersampling.
"""

import math
import os
import struct
import sys
import zlib

SIZE = 256
SS = 4  # supersamples per axis


def rounded_rect(x, y, x0, y0, x1, y1, r):
    """Whether (x, y) is inside the rectangle x0..x1, y0..y1 with corner radius r."""
    if x < x0 or x > x1 or y < y0 or y > y1:
        return False
    cx = min(max(x, x0 + r), x1 - r)
    cy = min(max(y, y0 + r), y1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def triangle(x, y, a, b, c):
    """Whether (x, y) is inside the triangle a, b, c."""

    def side(p, q):
        return (q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0])

    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    return (s1 >= 0 and s2 >= 0 and s3 >= 0) or (s1 <= 0 and s2 <= 0 and s3 <= 0)


def segment_distance(x, y, p, q):
    px, py = q[0] - p[0], q[1] - p[1]
    t = max(0.0, min(1.0, ((x - p[0]) * px + (y - p[1]) * py) / (px * px + py * py)))
    return math.hypot(x - (p[0] + t * px), y - (p[1] + t * py))


# The mesh on the camera body: three peers and their links.
DOTS = [(78.0, 146.0), (128.0, 104.0), (154.0, 156.0)]
LINKS = [(DOTS[0], DOTS[1]), (DOTS[1], DOTS[2]), (DOTS[2], DOTS[0])]
BLUE = (28, 78, 160)


def sample(x, y):
    """RGBA (0..255 floats) of the icon at a point."""
    if not rounded_rect(x, y, 8, 8, 248, 248, 48):
        return (0.0, 0.0, 0.0, 0.0)
    t = y / SIZE
    bg = (20 + 10 * t, 160 - 80 * t, 170 + 30 * t)  # teal at the top, blue at the bottom
    on_mesh = any(math.hypot(x - dx, y - dy) <= 13 for dx, dy in DOTS) or any(
        segment_distance(x, y, p, q) <= 4.5 for p, q in LINKS
    )
    body = rounded_rect(x, y, 44, 78, 180, 182, 22)
    lens = triangle(x, y, (172, 130), (218, 90), (218, 170))
    if body:
        return (*BLUE, 255.0) if on_mesh else (255.0, 255.0, 255.0, 255.0)
    if lens:
        return (255.0, 255.0, 255.0, 255.0)
    return (*bg, 255.0)


def render():
    rows = []
    for py in range(SIZE):
        row = bytearray([0])  # PNG filter type 0 (none)
        for px in range(SIZE):
            acc = [0.0, 0.0, 0.0, 0.0]
            for sy in range(SS):
                for sx in range(SS):
                    r, g, b, a = sample(px + (sx + 0.5) / SS, py + (sy + 0.5) / SS)
                    # Premultiplied, so transparent samples do not darken the edge.
                    acc[0] += r * a
                    acc[1] += g * a
                    acc[2] += b * a
                    acc[3] += a
            n = SS * SS
            alpha = acc[3] / n
            if alpha > 0:
                rgb = [round(c / acc[3]) for c in acc[:3]]
            else:
                rgb = [0, 0, 0]
            row += bytes([*rgb, round(alpha)])
        rows.append(bytes(row))
    return b"".join(rows)


def png(raw):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "assets", "meshcall.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(png(render()))
    print(out)


if __name__ == "__main__":
    main()
