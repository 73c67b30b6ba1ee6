"""Features the README claims, each checked against an in-process answer or a known result:
the exported `evaluate_ranking` and `encode_users` signatures, `target_scene`, the version
policies `latest:N` and `specific:...`, mutual TLS, and `dspnet serve --host` /
`--intra-op-threads`."""

from __future__ import annotations

import functools
import http.client
import json
import ssl

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving.client import DSPnetClient, make_example
from serving.server import ModelServer, ServerOptions
from serving.testing import install_version, make_test_certificate

HISTORY = (["i00001", "i00002", "i00003"], ["feed", "search", "live"])


@functools.lru_cache(maxsize=None)
def _load(path):
    return tf.saved_model.load(path)


def _in_process(path, items, scenes, target=None):
    """serving_default of the SavedModel at `path`, called in this process, for one history."""
    out = _load(path).signatures["serving_default"](
        examples=tf.constant([make_example(items, scenes, target)]))
    return [x.decode() for x in out["item_ids"].numpy()[0]], out["item_scores"].numpy()[0]


# --- the exported evaluate_ranking and encode_users signatures ------------------------------

ITEMS = ["", "<oov>"] + [f"sku{i}" for i in range(12)]
SCENES = ["", "<oov>", "feed", "search", "live"]
MAX_LEN = 5
# (item ids, scene ids) per user, oldest first; the last event is evaluate_ranking's target.
USERS = [([2, 5, 9, 3], [2, 3, 2, 4]),
         ([7, 7, 4], [4, 4, 2]),
         ([3, 8, 2, 11, 6, 10, 13], [2, 2, 3, 3, 4, 2, 3]),  # longer than max_len
         ([9, 12], [3, 4])]


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory):
    """A small DSPnet (target-scene parts made non-zero, as training makes them) and its
    export over the ITEMS / SCENES vocabularies."""
    from dspnet_tf import DSPnet, DSPnetConfig
    from dspnet_tf.export import export_serving_model

    tf.keras.utils.set_random_seed(5)
    model = DSPnet(DSPnetConfig(item_vocab_size=len(ITEMS), scene_vocab_size=len(SCENES),
                                max_len=MAX_LEN, item_dim=8, scene_dim=4, num_blocks=1,
                                dropout=0.0, seed=5))
    model({"item_ids": tf.ones([1, MAX_LEN], tf.int64), "scene_ids": tf.ones([1, MAX_LEN], tf.int64)})
    head = model.item_head
    assert head.scene_kernel is not None  # the default model reads the target scene
    rng = tf.random.Generator.from_seed(5)
    head.scene_kernel.assign(rng.normal(head.scene_kernel.shape, stddev=0.5))
    head.scene_bias.assign(rng.normal(head.scene_bias.shape, stddev=0.5))
    path = export_serving_model(model, str(tmp_path_factory.mktemp("claimed") / "1"), None,
                                ITEMS, SCENES, top_k=5)
    return model, tf.saved_model.load(path)


def _examples(users):
    return tf.constant([make_example([ITEMS[i] for i in items], [SCENES[s] for s in scenes])
                        for items, scenes in users])


def _padded(rows):
    """Left padded to max_len, the most recent max_len events."""
    rows = list(rows)
    out = np.zeros((len(rows), MAX_LEN), np.int64)
    for row, values in enumerate(rows):
        values = list(values)[-MAX_LEN:]
        if values:
            out[row, -len(values):] = values
    return out


def test_encode_users_equals_the_models_user_representation(exported_model):
    model, loaded = exported_model
    served = loaded.signatures["encode_users"](examples=_examples(USERS))["user_embedding"]
    expected = model.user_representation({"item_ids": _padded(u[0] for u in USERS),
                                          "scene_ids": _padded(u[1] for u in USERS)}).numpy()
    assert served.shape == (len(USERS), 8)
    np.testing.assert_allclose(served.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected[0], expected[1])  # users are told apart


def _expected_ranking(model, users, in_scene):
    """Pessimistic rank of each user's last item among the catalog (ids >= 2) given the events
    before it, as NDCG@10 / HR@10, computed with numpy from the model's own logits."""
    history = {"item_ids": _padded(u[0][:-1] for u in users),
               "scene_ids": _padded(u[1][:-1] for u in users)}
    if in_scene:
        history["target_scene"] = np.array([u[1][-1] for u in users])
    logits = model(history, training=False)["item_logits"].numpy()
    ndcg, hit, ranks = [], [], []
    for row, (items, _) in enumerate(users):
        target = items[-1]
        if target < 2:  # padding / OOV: never a right answer
            rank = logits.shape[1]
        else:
            rank = int((logits[row, 2:] >= logits[row, target]).sum())
        ranks.append(rank)
        hit.append(float(rank <= 10))
        ndcg.append(1.0 / np.log2(rank + 1) if rank <= 10 else 0.0)
    return np.array(ndcg), np.array(hit), ranks


def test_evaluate_ranking_equals_ranks_of_the_models_own_logits(exported_model):
    model, loaded = exported_model
    # One more user whose held-out item is unknown to the vocabulary: a miss in both tasks.
    unknown = tf.constant([make_example(["sku1", "never-seen"], ["feed", "live"])])
    served = loaded.signatures["evaluate_ranking"](
        examples=tf.concat([_examples(USERS), unknown], axis=0))
    assert set(served) == {"ndcg_at_10", "hit_at_10", "ndcg_at_10_in_scene",
                           "hit_at_10_in_scene"}
    all_ranks = []
    for suffix, in_scene in (("", False), ("_in_scene", True)):
        ndcg, hit, ranks = _expected_ranking(model, USERS, in_scene)
        all_ranks.append(ranks)
        np.testing.assert_allclose(served[f"ndcg_at_10{suffix}"].numpy()[:, 0],
                                   np.append(ndcg, 0.0), rtol=1e-5)
        np.testing.assert_array_equal(served[f"hit_at_10{suffix}"].numpy()[:, 0],
                                      np.append(hit, 0.0))
    # Not a degenerate fixture: NDCG values between 0 and 1 are compared, and telling the
    # model the held-out event's scene changes some rank.
    assert any(1 < r <= 10 for r in all_ranks[0] + all_ranks[1])
    assert all_ranks[0] != all_ranks[1]


def test_target_scene_changes_the_exported_models_ranking(exported_model):
    model, loaded = exported_model
    items, scenes = ["sku1", "sku4", "sku0"], ["feed", "search", "feed"]
    answers = {}
    for target in ("feed", "live"):
        out = loaded.signatures["serving_default"](
            examples=tf.constant([make_example(items, scenes, target)]))
        answers[target] = [x.decode() for x in out["item_ids"].numpy()[0]]
        # Known answer: the top 5 of the model's logits told that target scene.
        logits = model({"item_ids": _padded([[ITEMS.index(i) for i in items]]),
                        "scene_ids": _padded([[SCENES.index(s) for s in scenes]]),
                        "target_scene": np.array([SCENES.index(target)])},
                       training=False)["item_logits"].numpy()[0, 2:]
        assert answers[target] == [ITEMS[i + 2] for i in np.argsort(-logits, kind="stable")[:5]]
    assert answers["feed"] != answers["live"]


def test_target_scene_changes_the_served_ranking_over_rest(server, exported_versions):
    import base64

    items, scenes = HISTORY
    lists = {}
    for target in ("live", "cart"):
        encoded = base64.b64encode(make_example(items, scenes, target)).decode()
        status, body = _http("POST", server.rest_port, "/v1/models/dspnet:predict",
                             {"instances": [{"b64": encoded}]})
        assert status == 200, body
        lists[target] = body["predictions"][0]["item_ids"]
        assert lists[target] == _in_process(exported_versions[2], items, scenes, target)[0]
    assert lists["live"] != lists["cart"]


def _http(method, port, path, body=None, context=None):
    connection = (http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
                  if context else http.client.HTTPConnection("127.0.0.1", port, timeout=30))
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


# --- version policies -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def three_versions(exported_versions, tmp_path_factory):
    """A base path with versions 1, 2 and 3; version 3 holds version 1's weights, so answers
    tell 3 from 2."""
    base = tmp_path_factory.mktemp("three")
    sources = {1: exported_versions[1], 2: exported_versions[2], 3: exported_versions[1]}
    for version, source in sources.items():
        install_version(str(base), version, source)
    return base, sources


def _not_found(client, version):
    with pytest.raises(grpc.RpcError) as caught:
        client.recommend(*HISTORY, version=version)
    return caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("policy, served", [("latest:2", [3, 2]), ("specific:1,3", [3, 1])])
def test_version_policy_serves_exactly_its_versions(three_versions, policy, served):
    base, sources = three_versions
    options = ServerOptions(model_base_path=str(base), port=0, rest_port=None,
                            version_policy=policy, poll_seconds=0)
    with ModelServer(options) as server, \
            DSPnetClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        assert [s["version"] for s in client.status() if s["state"] == "AVAILABLE"] == served
        for version in (1, 2, 3):
            if version in served:
                answer = client.recommend(*HISTORY, version=version)
                assert answer.model_version == version
                assert answer.items == _in_process(sources[version], *HISTORY)[0]
            else:
                assert _not_found(client, version), (policy, version)
        # No version asked: the newest the policy serves.
        assert client.recommend(*HISTORY).model_version == served[0]


# --- mutual TLS -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA; a server and a client certificate it signs; a client certificate of another CA."""
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = tmp_path_factory.mktemp("pki")
    keys = {name: ec.generate_private_key(ec.SECP256R1())
            for name in ("ca", "other-ca", "server", "client", "stranger")}
    certificates = {
        "ca": make_test_certificate("test CA", keys["ca"], "test CA", keys["ca"].public_key(),
                                    ca=True),
        "other-ca": make_test_certificate("other CA", keys["other-ca"], "other CA",
                                          keys["other-ca"].public_key(), ca=True),
        "server": make_test_certificate("127.0.0.1", keys["ca"], "test CA",
                                        keys["server"].public_key(), server=True),
        "client": make_test_certificate("client", keys["ca"], "test CA",
                                        keys["client"].public_key()),
        "stranger": make_test_certificate("stranger", keys["other-ca"], "other CA",
                                          keys["stranger"].public_key()),
    }
    paths = {}
    for name, certificate in certificates.items():
        paths[f"{name}.pem"] = folder / f"{name}.pem"
        paths[f"{name}.pem"].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}.key"] = folder / f"{name}.key"
        paths[f"{name}.key"].write_bytes(keys[name].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    return {name: str(path) for name, path in paths.items()}


def test_mutual_tls_needs_a_client_certificate_signed_by_the_client_ca(exported_versions,
                                                                       tmp_path, pki):
    base = tmp_path / "base"
    base.mkdir()
    install_version(str(base), 1, exported_versions[1])
    options = ServerOptions(model_base_path=str(base), port=0, rest_port=0, poll_seconds=0,
                            tls_cert=pki["server.pem"], tls_key=pki["server.key"],
                            tls_client_ca=pki["ca.pem"])
    expected = _in_process(exported_versions[1], *HISTORY)[0]
    with ModelServer(options) as server:
        target = f"127.0.0.1:{server.port}"
        # gRPC: a certificate the client CA signed is let in and answered.
        with DSPnetClient(target, root_certificates=pki["ca.pem"],
                          client_certificate=pki["client.pem"],
                          client_key=pki["client.key"]) as client:
            assert client.recommend(*HISTORY).items == expected
        # No client certificate, or one of another CA: refused.
        for certificate in (None, "stranger"):
            with DSPnetClient(target, root_certificates=pki["ca.pem"], timeout=5,
                              client_certificate=certificate and pki[f"{certificate}.pem"],
                              client_key=certificate and pki[f"{certificate}.key"]) as client:
                with pytest.raises(grpc.RpcError) as refused:
                    client.recommend(*HISTORY)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, certificate

        # REST (HTTPS): the same rule.
        def context(certificate=None):
            made = ssl.create_default_context(cafile=pki["ca.pem"])
            if certificate:
                made.load_cert_chain(pki[f"{certificate}.pem"], pki[f"{certificate}.key"])
            return made

        status, body = _http("GET", server.rest_port, "/v1/models/dspnet",
                             context=context("client"))
        assert status == 200 and body["model_version_status"][0]["version"] == "1"
        for certificate in (None, "stranger"):
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                _http("GET", server.rest_port, "/v1/models/dspnet", context=context(certificate))


# --- dspnet serve --host and --intra-op-threads ---------------------------------------------

def test_dspnet_serve_binds_the_host_and_sets_the_thread_pools(exported_versions, tmp_path,
                                                               monkeypatch, capsys):
    from dspnet_tf import cli

    base = tmp_path / "base"
    base.mkdir()
    install_version(str(base), 1, exported_versions[1])
    threads, seen = {}, {}
    monkeypatch.setattr(tf.config.threading, "set_intra_op_parallelism_threads",
                        lambda n: threads.__setitem__("intra", n))
    monkeypatch.setattr(tf.config.threading, "set_inter_op_parallelism_threads",
                        lambda n: threads.__setitem__("inter", n))

    def serve_until_signal(self):
        # Instead of waiting for SIGTERM: ask on the bound host, and on another loopback address.
        try:
            with DSPnetClient(f"127.0.0.2:{self.port}", timeout=30) as client:
                seen["answer"] = client.recommend(*HISTORY).items
            with DSPnetClient(f"127.0.0.1:{self.port}", timeout=5) as client:
                with pytest.raises(grpc.RpcError) as refused:
                    client.recommend(*HISTORY)
                seen["other_address"] = refused.value.code()
        finally:
            self.stop()

    monkeypatch.setattr(ModelServer, "serve_until_signal", serve_until_signal)
    assert cli.main(["serve", "--model-base-path", str(base), "--host", "127.0.0.2",
                     "--port", "0", "--rest-port", "-1", "--intra-op-threads", "1",
                     "--inter-op-threads", "2"]) == 0
    assert threads == {"intra": 1, "inter": 2}
    assert seen["answer"] == _in_process(exported_versions[1], *HISTORY)[0]
    assert seen["other_address"] == grpc.StatusCode.UNAVAILABLE
    assert "gRPC 127.0.0.2:" in capsys.readouterr().out
