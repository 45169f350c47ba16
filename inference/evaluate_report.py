"""How ``detectionjob evaluate`` shows its report: a per-class table for a terminal, and the
precision-recall curves as a PNG drawn with Pillow."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 960, 600
PLOT = (70, 50, 690, 540)  # left, top, right, bottom of the axes
LEGEND_X = 720
LINE_HEIGHT = 18
GREY = (190, 190, 190)
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 200, 200),
           (240, 50, 230), (150, 190, 20), (0, 128, 128), (170, 110, 40), (128, 0, 0), (128, 128, 0),
           (0, 0, 128), (255, 200, 0), (100, 100, 100), (255, 120, 150)]


# --- the table -----------------------------------------------------------------------------------


def _number(value: float) -> str:
    return "    -" if value < 0 else f"{value:.3f}"


def table(report: dict) -> str:
    """The report for a person: the headline numbers, one line per class (best AP first), notes."""
    r = report
    lines = [f"mAP {_number(r['map'])}   AP50 {_number(r['map_50'])}   AP75 {_number(r['map_75'])}   "
             f"AR100 {_number(r['mar_100'])}   ({r['images']} images, {r['objects']} objects, "
             f"{r['detections']} detections)",
             f"AP small {_number(r['map_small'])}  medium {_number(r['map_medium'])}  large "
             f"{_number(r['map_large'])}   AR1 {_number(r['mar_1'])}  AR10 {_number(r['mar_10'])}", ""]
    classes = sorted(r["per_class"].items(), key=lambda kv: (-kv[1]["ap"], kv[0]))
    width = max([len("class"), *(len(name) for name, _ in classes)])
    lines.append(f"{'class':<{width}}     AP   AP50  objects")
    lines += [f"{name:<{width}}  {_number(c['ap'])}  {_number(c['ap_50'])}  {c['objects']:>7}"
              for name, c in classes]
    return "\n".join(lines + [""] + notes(report))


def notes(report: dict) -> list[str]:
    """What was left out of the numbers, and where the files are."""
    out = []
    missing = report["images_without_results"]
    if missing["count"]:
        names = ", ".join(missing["first"]) + (", ..." if missing["count"] > len(missing["first"]) else "")
        out.append(f"annotated images without results, counted as detecting nothing: {missing['count']} "
                   f"(no row {missing['no_row']}, error row {missing['error_row']}): {names}")
    left = report["detections_left_out"]
    if left["count"]:
        which = ", ".join(f"{name} {n}" for name, n in list(left["per_class"].items())[:8])
        more = ", ..." if len(left["per_class"]) > 8 else ""
        out.append(f"detections left out, their classes not annotated: {left['count']} ({which}{more})")
    if report["result_rows_not_annotated"]:
        out.append(f"result rows left out, their images not annotated: {report['result_rows_not_annotated']}")
    out.append(f"report: {report['evaluation']}   PR curves: {report['pr_curves']}")
    return out


# --- the precision-recall curves -----------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()


def _xy(recall: np.ndarray, precision: np.ndarray) -> list[tuple[float, float]]:
    left, top, right, bottom = PLOT
    x = left + recall * (right - left)
    y = bottom - precision * (bottom - top)
    return list(zip(x.tolist(), y.tolist(), strict=True))


def _axes(draw: ImageDraw.ImageDraw, font, title: str) -> None:
    left, top, right, bottom = PLOT
    for tick in np.linspace(0, 1, 11):
        x = left + tick * (right - left)
        y = bottom - tick * (bottom - top)
        draw.line([(x, top), (x, bottom)], fill=(235, 235, 235))
        draw.line([(left, y), (right, y)], fill=(235, 235, 235))
        if round(tick * 10) % 2 == 0:
            draw.text((x, bottom + 6), f"{tick:.1f}", fill="black", font=font, anchor="mt")
            draw.text((left - 6, y), f"{tick:.1f}", fill="black", font=font, anchor="rm")
    draw.rectangle(PLOT, outline="black")
    draw.text(((left + right) / 2, bottom + 26), "recall", fill="black", font=font, anchor="mt")
    draw.text((left, 16), title, fill="black", font=font)
    draw.text((LEGEND_X, top - LINE_HEIGHT - 4), "AP50   class", fill="black", font=font)


def _vertical(image: Image.Image, text: str, font, center: tuple[int, int]) -> None:
    """``text`` turned a quarter left (the y axis' label), centred at ``center``."""
    box = font.getbbox(text)
    label = Image.new("RGB", (box[2] + 4, box[3] + 4), "white")
    ImageDraw.Draw(label).text((2, 2), text, fill="black", font=font)
    label = label.rotate(90, expand=True)
    image.paste(label, (center[0] - label.width // 2, center[1] - label.height // 2))


def pr_curves_png(curves: dict[str, np.ndarray], recall: np.ndarray, title: str) -> bytes:
    """A PNG of each class's precision over recall: the best (by AP50) in colours and in the legend,
    the rest, if there are more than colours, in grey."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = _font(13)
    _axes(draw, font, f"precision-recall at IoU 0.5 (COCOeval, 101 points): {title}"[:95])
    _vertical(image, "precision", font, (PLOT[0] - 50, (PLOT[1] + PLOT[3]) // 2))
    order = sorted(curves, key=lambda name: (-_ap50(curves[name]), name))
    room = min((HEIGHT - PLOT[1]) // LINE_HEIGHT - 1, len(PALETTE))  # one colour per class shown
    shown, grey = (order, []) if len(order) <= room else (order[:room - 1], order[room - 1:])
    for name in grey:
        _curve(draw, recall, curves[name], GREY)
    for index, name in reversed(list(enumerate(shown))):  # the best is drawn last, on top
        color = PALETTE[index]
        _curve(draw, recall, curves[name], color)
        y = PLOT[1] + index * LINE_HEIGHT
        draw.line([(LEGEND_X, y + 7), (LEGEND_X + 22, y + 7)], fill=color, width=3)
        draw.text((LEGEND_X + 28, y), f"{_ap50(curves[name]):.3f}  {name}"[:30], fill="black", font=font)
    if grey:
        y = PLOT[1] + len(shown) * LINE_HEIGHT
        draw.text((LEGEND_X + 28, y), f"+{len(grey)} more (grey)", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _ap50(precision: np.ndarray) -> float:
    return float(precision.mean()) if precision.size else 0.0


def _curve(draw: ImageDraw.ImageDraw, recall: np.ndarray, precision: np.ndarray, color) -> None:
    """The curve up to the highest recall reached (COCOeval's precision is 0 beyond it)."""
    reached = np.flatnonzero(precision > 0)
    if not reached.size:
        return
    end = int(reached[-1]) + 1
    draw.line(_xy(recall[:end], precision[:end]), fill=color, width=2, joint="curve")
