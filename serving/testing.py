"""Small exported models for tests, benchmarks and the reliability suite.

Serving cost does not depend on what the weights learned, so an untrained DSPnet of a given
shape, exported with the project's one export function, is an honest stand-in for latency and
contract checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Optional, Sequence

import dspnet_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from dspnet_tf import DSPnet, DSPnetConfig
from dspnet_tf.export import export_serving_model

SCENES = ("feed", "search", "live", "favorites", "cart")


def item_names(num_items: int) -> list:
    """The raw item ids of the test models: i00000, i00001, ..."""
    return [f"i{i:05d}" for i in range(num_items)]


def export_untrained_model(export_dir: str, num_items: int = 40, max_len: int = 8,
                           item_dim: int = 16, scene_dim: int = 8, seed: int = 0,
                           top_k: int = 10, scenes: Sequence[str] = SCENES,
                           config: Optional[dict] = None) -> str:
    """Exports a freshly initialised DSPnet over items i00000.. and the given scenes."""
    item_tokens = ["", "<oov>"] + item_names(num_items)
    scene_tokens = ["", "<oov>"] + list(scenes)
    settings = dict(item_vocab_size=len(item_tokens), scene_vocab_size=len(scene_tokens),
                    max_len=max_len, item_dim=item_dim, scene_dim=scene_dim, dropout=0.0,
                    seed=seed)
    settings.update(config or {})
    tf.keras.utils.set_random_seed(seed)
    model = DSPnet(DSPnetConfig(**settings))
    model({"item_ids": tf.zeros([1, max_len], tf.int64),
           "scene_ids": tf.zeros([1, max_len], tf.int64)})
    head = model.item_head
    if getattr(head, "scene_kernel", None) is not None:
        # The per-scene parts start at zero (every surface would get the same answer until
        # trained); random ones make the stand-in's target scenes tell apart, as a trained
        # model's do, so tests can see which one a request asked for.
        rng = tf.random.Generator.from_seed(seed)
        head.scene_kernel.assign(rng.normal(head.scene_kernel.shape, stddev=0.5))
        head.scene_bias.assign(rng.normal(head.scene_bias.shape, stddev=0.5))
    return export_serving_model(model, export_dir, None, item_tokens, scene_tokens, top_k=top_k)


def install_version(base_path: str, version: int, source: str) -> str:
    """Copies an exported model into `base_path/version` as the serving contract requires:
    complete files first (in a hidden staging folder), then one atomic rename."""
    staging = os.path.join(base_path, f".staging-{version}")
    shutil.copytree(source, staging)
    target = os.path.join(base_path, str(version))
    os.rename(staging, target)
    return target


def saved_model_cli_signatures(export_dir: str) -> dict:
    """`saved_model_cli show --all` parsed: {signature: {"inputs"/"outputs": {name: {dtype, shape}}}}."""
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    text = subprocess.run([cli, "show", "--dir", export_dir, "--all"], check=True,
                          capture_output=True, text=True).stdout
    signatures, current, tensor = {}, None, None
    for line in text.splitlines():
        header = re.match(r"signature_def\['(.+)'\]:", line.strip())
        if header:
            current = signatures.setdefault(header.group(1), {"inputs": {}, "outputs": {}})
            continue
        named = re.match(r"\s*(inputs|outputs)\['(.+)'\] tensor_info:", line)
        if named and current is not None:
            tensor = current[named.group(1)].setdefault(named.group(2), {})
        elif tensor is not None and line.strip().startswith(("dtype:", "shape:")):
            key, value = line.strip().split(":", 1)
            tensor[key] = value.strip()
    return signatures


def check_contract(signatures: dict, top_k: int, num_scenes: int, max_len: int) -> None:
    """Asserts serving-contract.md's signatures, tensor names, dtypes and shapes."""
    items, scenes = f"(-1, {top_k})", f"(-1, {num_scenes})"
    outputs = {"item_ids": ("DT_STRING", items), "item_scores": ("DT_FLOAT", items),
               "scene_ids": ("DT_STRING", scenes), "scene_probs": ("DT_FLOAT", scenes)}
    contract = {
        "serving_default": ({"examples": ("DT_STRING", "(-1)")}, outputs),
        "predict_raw": ({"item_history": ("DT_STRING", "(-1, -1)"),
                         "scene_history": ("DT_STRING", "(-1, -1)")}, outputs),
        # Transform's training examples: max_len inputs + the event after the last one.
        "transform_features": ({"examples": ("DT_STRING", "(-1)")},
                               {"item_ids": ("DT_INT64", f"(-1, {max_len + 1})"),
                                "scene_ids": ("DT_INT64", f"(-1, {max_len + 1})")}),
    }
    for name, (inputs, outs) in contract.items():
        assert name in signatures, f"signature {name} missing: {sorted(signatures)}"
        for side, expected in (("inputs", inputs), ("outputs", outs)):
            assert set(signatures[name][side]) == set(expected), (name, side)
            for tensor, (dtype, shape) in expected.items():
                found = signatures[name][side][tensor]
                assert found == {"dtype": dtype, "shape": shape}, (name, side, tensor, found)


def make_test_certificate(subject: str, issuer_key, issuer: str, public_key, ca: bool = False,
                          server: bool = False):
    """A throwaway X.509 certificate for TLS tests: a CA (`ca`), a server certificate for
    127.0.0.1 and localhost (`server`), or a plain client certificate."""
    import datetime  # pylint: disable=import-outside-toplevel
    import ipaddress  # pylint: disable=import-outside-toplevel

    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes  # pylint: disable=import-outside-toplevel
    from cryptography.x509.oid import NameOID  # pylint: disable=import-outside-toplevel

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_test_pki(folder: str) -> dict:
    """Throwaway PEM files for TLS tests: a CA, a server certificate it signs (127.0.0.1 and
    localhost), a client certificate it signs, and an unrelated second CA. -> name -> path
    (ca.pem, other-ca.pem, server.pem, server.key, client.pem, client.key)."""
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key, other_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1())
                                                 for _ in range(4))
    files = {
        "ca.pem": make_test_certificate("dspnet test CA", ca_key, "dspnet test CA",
                                        ca_key.public_key(), ca=True),
        "other-ca.pem": make_test_certificate("other CA", other_key, "other CA",
                                              other_key.public_key(), ca=True),
        "server.pem": make_test_certificate("127.0.0.1", ca_key, "dspnet test CA",
                                            server_key.public_key(), server=True),
        "client.pem": make_test_certificate("dspnet test client", ca_key, "dspnet test CA",
                                            client_key.public_key()),
    }
    paths = {}
    for name, cert in files.items():
        paths[name] = os.path.join(folder, name)
        with open(paths[name], "wb") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))
    for name, key in {"server.key": server_key, "client.key": client_key}.items():
        paths[name] = os.path.join(folder, name)
        with open(paths[name], "wb") as handle:
            handle.write(key_pem(key))
    return paths
