"""Install with ``pip install -e .`` (see README)."""
from setuptools import find_packages, setup

setup(
    name='basicsr_ext',
    version='0.1.0',
    description='Config-driven training and benchmarking of generalizable blind super-resolution on basicsr',
    packages=find_packages(include=['basicsr_ext', 'basicsr_ext.*']),
    # the published numbers (EATS Tables 1-7) and their metadata, read by basicsr_ext.evaluation.paper_tables
    package_data={'basicsr_ext.evaluation.paper_tables': ['*.csv', '*.json']},
    python_requires='>=3.10,<3.13',
    install_requires=[
        # torch 2.14.1 / torchvision 0.29.1 are served from local disk on the project machines
        'torch>=2.1,<2.15',
        'torchvision>=0.16,<0.30',
        'basicsr==1.4.2',
        'numpy',
        'opencv-python',
        'pillow',
        'pyyaml',
        'lmdb',
        'tensorboard',
        'scikit-image',
        'scipy',
        'tqdm',
        'matplotlib',
        # LPIPS and DISTS (basicsr_ext.metrics): their heads ship in the package; backbones are read from local files
        'torchmetrics>=1.9,<2',
        'safetensors',  # logger.save_safetensors and .safetensors checkpoints
    ],
    extras_require={
        # scripts/export_onnx.py: the exporter's graph checks and the onnxruntime check
        'onnx': ['onnx', 'onnxruntime'],
        # logger.wandb
        'wandb': ['wandb'],
        # tests/test_interchange.py: other tools load this project's checkpoints
        'test': ['pytest', 'jsonschema', 'onnx', 'onnxruntime', 'spandrel', 'wandb'],
    },
)
