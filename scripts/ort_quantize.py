"""onnxruntime's own int8 forms of a float Kestrel bundle: the reference of scripts/bench-int8.sh.

Calibrates `onnxruntime.quantization.quantize_static` on the photos in DIR (resized to the
bundle's input, normalised as the bundle's spec says) and writes, beside OUT_PREFIX:
  OUT_PREFIX-qdq.onnx        QDQ, int8 activations and per-channel int8 weights
  OUT_PREFIX-qoperator.onnx  QOperator (QLinearConv), uint8 activations, per-channel int8 weights
The bundle's metadata_props (labels, preprocessing, model card) are carried over, so Kestrel
loads the same files.

    python scripts/ort_quantize.py FLOAT.onnx PHOTO_DIR OUT_PREFIX
"""

import json
import os
import sys

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from PIL import Image


class Photos(CalibrationDataReader):
    def __init__(self, model, folder):
        spec = {p.key: p.value for p in model.metadata_props}
        pre = json.loads(spec["kestrel.preprocess"])
        size = (pre["width"], pre["height"])
        mean, std = np.array(pre["mean"], np.float32), np.array(pre["std"], np.float32)
        name = model.graph.input[0].name
        self.items = []
        for f in sorted(os.listdir(folder)):
            try:
                img = Image.open(os.path.join(folder, f)).convert("RGB").resize(size, Image.BILINEAR)
            except OSError:
                continue
            x = (np.asarray(img, np.float32) - mean) / std
            self.items.append({name: x.transpose(2, 0, 1)[None].astype(np.float32)})
        self.it = iter(self.items)

    def get_next(self):
        return next(self.it, None)


def main():
    src, photos, prefix = sys.argv[1:4]
    model = onnx.load(src)
    for form, fmt, act in (("qdq", QuantFormat.QDQ, QuantType.QInt8), ("qoperator", QuantFormat.QOperator, QuantType.QUInt8)):
        out = f"{prefix}-{form}.onnx"
        quantize_static(src, out, Photos(model, photos), quant_format=fmt, activation_type=act,
                        weight_type=QuantType.QInt8, per_channel=True)
        q = onnx.load(out)
        # The quantiser records intermediate shapes with a symbolic batch `N`, which tract refuses
        # to unify with the batch of 1 Kestrel feeds; they are hints both engines infer anyway.
        del q.graph.value_info[:]
        del q.metadata_props[:]
        q.metadata_props.extend(model.metadata_props)
        onnx.save(q, out)
        print(out)


if __name__ == "__main__":
    main()
