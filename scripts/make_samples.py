#!/usr/bin/env python3
"""Write the sample TDW-II workitems in ups_instances/ (same builder as `tdwii create-workitem`).

    python scripts/make_samples.py [OUTPUT_DIR]      # default: ups_instances/

Every UID and time is fixed, so running it again writes byte-identical files.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from tdwii_cli.client.dicomfiles import write_part10
from tdwii_cli.ups.workitem import build_workitem

# UIDs under pydicom's example root 1.2.826.0.1.3680043.8.498 ("sample" data, fixed).
ROOT = "1.2.826.0.1.3680043.8.498.7797"

SAMPLES = [
    {
        "file": "ups_truebeam1_breast_left.dcm",
        "n": 1,
        "patient_id": "TDW-1001",
        "patient_name": "Moreau^Claire",
        "birth_date": "19640312",
        "sex": "F",
        "label": "Breast L 40.05Gy/15 Fx 3",
        "plan_label": "BreastL_3DCRT",
        "worklist_label": "TrueBeam1 morning",
        "station": "TrueBeam1",
        "priority": "MEDIUM",
        "scheduled": datetime(2025, 3, 10, 8, 0),
        "fraction": 3,
        "fractions_planned": 15,
    },
    {
        "file": "ups_truebeam1_prostate.dcm",
        "n": 2,
        "patient_id": "TDW-1002",
        "patient_name": "Okafor^Daniel",
        "birth_date": "19521101",
        "sex": "M",
        "label": "Prostate VMAT 60Gy/20 Fx 7",
        "plan_label": "Prost_VMAT",
        "worklist_label": "TrueBeam1 morning",
        "station": "TrueBeam1",
        "priority": "LOW",
        "scheduled": datetime(2025, 3, 10, 8, 20),
        "fraction": 7,
        "fractions_planned": 20,
    },
    {
        "file": "ups_halcyon2_headneck.dcm",
        "n": 3,
        "patient_id": "TDW-1003",
        "patient_name": "Lindqvist^Erik^J",
        "birth_date": "19701224",
        "sex": "M",
        "label": "H&N IMRT 70Gy/35 Fx 12",
        "plan_label": "HN_IMRT_boost",
        "worklist_label": "Halcyon2",
        "station": "Halcyon2",
        "priority": "MEDIUM",
        "scheduled": datetime(2025, 3, 10, 9, 45),
        "fraction": 12,
        "fractions_planned": 35,
    },
    {
        "file": "ups_halcyon2_palliative_high.dcm",
        "n": 4,
        "patient_id": "TDW-1004",
        "patient_name": "Nakamura^Yuki",
        "birth_date": "19450607",
        "sex": "F",
        "label": "Spine palliative 8Gy/1",
        "plan_label": "TSpine_8Gy",
        "worklist_label": "Halcyon2",
        "station": "Halcyon2",
        "priority": "HIGH",
        "scheduled": datetime(2025, 3, 10, 11, 0),
        "fraction": 1,
        "fractions_planned": 1,
        "comments": "Urgent: cord compression, treat today",
    },
    {
        "file": "ups_versahd3_lung_sbrt.dcm",
        "n": 5,
        "patient_id": "TDW-1005",
        "patient_name": "García López^María",
        "birth_date": "19580919",
        "sex": "F",
        "label": "Lung SBRT 54Gy/3 Fx 2",
        "plan_label": "LungR_SBRT",
        "worklist_label": "VersaHD3 SBRT",
        "station": "VersaHD3",
        "priority": "HIGH",
        "scheduled": datetime(2025, 3, 12, 14, 30),
        "fraction": 2,
        "fractions_planned": 3,
    },
    {
        "file": "ups_truebeam1_continuation.dcm",
        "n": 6,
        "patient_id": "TDW-1001",
        "patient_name": "Moreau^Claire",
        "birth_date": "19640312",
        "sex": "F",
        "label": "Breast L Fx 3 continuation",
        "plan_label": "BreastL_3DCRT",
        "worklist_label": "TrueBeam1 morning",
        "station": "TrueBeam1",
        "priority": "MEDIUM",
        "scheduled": datetime(2025, 3, 10, 8, 40),
        "fraction": 3,
        "fractions_planned": 15,
        "delivery_type": "CONTINUATION",
        "comments": "Interrupted after beam 2 (couch fault); deliver remaining beams",
    },
]


def make_samples(out: Path) -> list[Path]:
    """Write the samples into `out`; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for sample in SAMPLES:
        spec = dict(sample)
        name = spec.pop("file")
        n = spec.pop("n")
        ds = build_workitem(
            sop_instance_uid=f"{ROOT}.1.{n}",
            plan_uid=f"{ROOT}.2.{n}",
            study_uid=f"{ROOT}.3.{n}",
            series_uid=f"{ROOT}.4.{n}",
            retrieve_aet="TMS_OST",
            **spec,
        )
        written.append(write_part10(ds, out / name))
    return written


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    out = Path(argv[1]) if len(argv) > 1 else root / "ups_instances"
    for path in make_samples(out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
