# Image for the Kubeflow components: the TFX 1.16 base image plus this package.
#   docker build -t REGISTRY/dspnet-tfx:0.1.0 .
#   dspnet pipeline compile --out pipeline.json --image REGISTRY/dspnet-tfx:0.1.0
FROM gcr.io/tfx-oss-public/tfx:1.16.0
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /opt/dspnet
COPY requirements.lock requirements-nodeps.lock setup.py pyproject.toml README.md ./
COPY dspnet_tf ./dspnet_tf
COPY tfx_pipeline ./tfx_pipeline
COPY serving ./serving
# The base image already has the TFX stack; the lock pins what this package adds on top.
RUN pip install --no-cache-dir "tf-keras==2.16.0" "tensorflow-recommenders==0.7.7" \
        "tensorflow-serving-api==2.16.1" dill \
 && pip install --no-cache-dir --no-deps .
