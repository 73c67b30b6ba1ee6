"""DSPnet-TF: a scene-aware sequential recommender for TensorFlow, TFX and TF Serving."""

import re
from pathlib import Path

from setuptools import find_packages, setup

# The one source of the version is dspnet_tf/_version.py; read it as text, since importing the
# package would import TensorFlow.
VERSION_FILE = Path(__file__).parent / "dspnet_tf" / "_version.py"
VERSION = re.search(r'^__version__ = "([^"]+)"$', VERSION_FILE.read_text(encoding="utf-8"),
                    re.MULTILINE).group(1)

setup(
    name="dspnet-tf",
    version=VERSION,
    description="DSPnet (dual scene/item sequence networks) in TensorFlow / Keras 2 with TFX and TF Serving",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["dspnet_tf", "dspnet_tf.*", "tfx_pipeline", "tfx_pipeline.*",
                                    "serving", "serving.*"]),
    python_requires=">=3.10,<3.11",
    # Exact versions live in requirements.lock; these are the direct dependencies.
    install_requires=[
        "tensorflow==2.16.2",
        "tf-keras==2.16.0",
        "tensorflow-recommenders==0.7.7",
        "numpy>=1.26,<2",
    ],
    extras_require={
        "tfx": ["tfx[kfp]==1.16.0", "dill", "tensorflow-serving-api==2.16.1"],
    },
    entry_points={"console_scripts": ["dspnet=dspnet_tf.cli:main"]},
    classifiers=["Programming Language :: Python :: 3.10"],
)
