"""Export: a fitted model as a portable file (ONNX), for runtimes without deepfeat or torch.

Needs the ``onnx`` extra: ``pip install 'deepfeat[onnx]'``. Nothing in deepfeat imports
this package.
"""

from deepfeat.export.head import ExportRefused
from deepfeat.export.onnx import CHECK_TOLERANCE, FORMATS, export_onnx, metadata_of

__all__ = ["CHECK_TOLERANCE", "ExportRefused", "FORMATS", "export_onnx", "metadata_of"]
