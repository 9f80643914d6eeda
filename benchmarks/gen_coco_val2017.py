"""Write a synthetic COCO instances file shaped like ``instances_val2017.json``.

5,000 images, 36,781 annotations, 80 categories; polygons for most objects, uncompressed
RLE for ~1% crowd annotations; about the size of the real file (~25 MB). Deterministic.

Usage: python benchmarks/gen_coco_val2017.py [OUT] (default /tmp/instances_val2017_synth.json)
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import orjson

IMAGES = 5_000
ANNOTATIONS = 36_781
CATEGORIES = 80


def generate(seed: int = 2017) -> dict[str, object]:
    """The COCO document as Python objects."""
    rng = random.Random(seed)
    supers = ["person", "vehicle", "outdoor", "animal", "accessory", "sports", "kitchen", "food"]
    categories = [
        {"supercategory": supers[i % len(supers)], "id": i + 1 + i // 10, "name": f"class_{i:02d}"}
        for i in range(CATEGORIES)
    ]
    images = []
    for index in range(IMAGES):
        width, height = rng.choice([(640, 480), (480, 640), (640, 427), (500, 375), (640, 426)])
        image_id = 100_000 + index * 97
        images.append(
            {
                "license": rng.randint(1, 8),
                "file_name": f"{image_id:012d}.jpg",
                "coco_url": f"http://images.cocodataset.org/val2017/{image_id:012d}.jpg",
                "height": height,
                "width": width,
                "date_captured": "2013-11-14 17:02:52",
                "flickr_url": f"http://farm7.staticflickr.com/6116/{image_id}_e2d4c1e8f6_z.jpg",
                "id": image_id,
            }
        )
    annotations = []
    # every image but ~48 gets at least one annotation, like the real file
    owners = [images[i % (IMAGES - 48)] for i in range(ANNOTATIONS)]
    rng.shuffle(owners)
    for index, image in enumerate(owners):
        width, height = int(image["width"]), int(image["height"])  # type: ignore[call-overload]
        w = round(rng.uniform(2, width * 0.6), 2)
        h = round(rng.uniform(2, height * 0.6), 2)
        x = round(rng.uniform(0, width - w), 2)
        y = round(rng.uniform(0, height - h), 2)
        crowd = rng.random() < 0.0076
        if crowd:
            runs = [rng.randint(1, 400) for _ in range(rng.randint(50, 400))]
            runs.append(width * height - sum(runs))  # well-formed: the runs cover the image
            segmentation: object = {"counts": runs, "size": [height, width]}
        else:
            points = rng.randint(6, 70)
            segmentation = [
                [
                    round(rng.uniform(x, x + w) if k % 2 == 0 else rng.uniform(y, y + h), 2)
                    for k in range(points * 2)
                ]
            ]
        annotations.append(
            {
                "segmentation": segmentation,
                "area": round(w * h * 0.6, 4),
                "iscrowd": int(crowd),
                "image_id": image["id"],
                "bbox": [x, y, w, h],
                "category_id": categories[rng.randrange(CATEGORIES)]["id"],
                "id": 1_000_000 + index,
            }
        )
    return {
        "info": {
            "description": "synthetic COCO-shaped file (mlbook benchmark)",
            "url": "",
            "version": "1.0",
            "year": 2017,
            "contributor": "mlbook",
            "date_created": "2017/09/01",
        },
        "licenses": [{"url": "", "id": i, "name": f"licence {i}"} for i in range(1, 9)],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/instances_val2017_synth.json")
    out.write_bytes(orjson.dumps(generate()))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
