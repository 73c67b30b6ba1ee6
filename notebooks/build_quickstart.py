"""Writes notebooks/quickstart.ipynb from the cells below (the notebook is committed; edit here,
re-run `python notebooks/build_quickstart.py`, and the test executes the result)."""

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# DSPnet-TF quickstart\n\n"
        "Generate a small scene world, train DSPnet with `model.fit`, evaluate it with full "
        "ranking, plot the training, recommend for a user, and export the model with raw ids in "
        "and out (TF Serving's contract). Runs on CPU in a few minutes; set "
        "`DSPNET_QUICKSTART_TINY=1` for a one-minute version."),
    new_code_cell(
        "import os\n"
        "import dspnet_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow)\n"
        "import tensorflow as tf\n"
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n\n"
        "TINY = os.environ.get('DSPNET_QUICKSTART_TINY') == '1'\n"
        "USERS, ITEMS, EPOCHS, MAX_LEN = (300, 100, 2, 20) if TINY else (3000, 500, 8, 50)\n"
        "WORK = os.environ.get('DSPNET_QUICKSTART_DIR', 'quickstart-out')\n"
        "tf.keras.utils.set_random_seed(0)"),
    new_markdown_cell("## 1. A scene world\n\nThe simulator of `evaluation.md`: users with a "
                      "latent intent that moves between scenes; it writes the standard event log "
                      "(`user_id, item_id, scene, timestamp`)."),
    new_code_cell(
        "from dspnet_tf.data.scene_world import SceneWorld, SceneWorldConfig\n"
        "from dspnet_tf.data.event_log import read_event_log\n"
        "from dspnet_tf.data.splits import leave_one_out\n\n"
        "log = SceneWorld(SceneWorldConfig(users=USERS, items=ITEMS, categories=5, seed=0)).generate()\n"
        "paths = log.write(os.path.join(WORK, 'world'))\n"
        "split = leave_one_out(read_event_log(paths['events']))\n"
        "split.summary()"),
    new_markdown_cell("## 2. Train with `model.fit`\n\nNo labels: every position learns the next "
                      "item and the next scene."),
    new_code_cell(
        "from dspnet_tf import DSPnet, DSPnetConfig\n"
        "from dspnet_tf.data import make_dataset\n\n"
        "config = DSPnetConfig(item_vocab_size=len(split.item_vocab),\n"
        "                      scene_vocab_size=len(split.scene_vocab),\n"
        "                      max_len=MAX_LEN, item_dim=32, scene_dim=8, num_blocks=1)\n"
        "model = DSPnet(config)\n"
        "model.compile(optimizer=tf.keras.optimizers.Adam(3e-3))\n"
        "history = model.fit(make_dataset(*split.train, max_len=MAX_LEN + 1, batch_size=64),\n"
        "                    validation_data=make_dataset(*split.valid, max_len=MAX_LEN + 1,\n"
        "                                                 batch_size=256, shuffle=False),\n"
        "                    epochs=EPOCHS, verbose=2)"),
    new_markdown_cell("## 3. Evaluate: each user's last event, ranked against the whole catalog"),
    new_code_cell(
        "from dspnet_tf.evaluation import evaluate_last_events\n"
        "from dspnet_tf.models.most_popular import MostPopular\n\n"
        "ours = evaluate_last_events(model, *split.test, max_len=MAX_LEN)\n"
        "popular = evaluate_last_events(\n"
        "    MostPopular(*split.train, len(split.item_vocab), len(split.scene_vocab)),\n"
        "    *split.test, max_len=MAX_LEN)\n"
        "{k: (round(ours[k], 4), round(popular[k], 4)) for k in ('hr@10', 'ndcg@10', 'scene_acc@1')}"),
    new_markdown_cell("## 4. Plot the training"),
    new_code_cell(
        "fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))\n"
        "for key in ('item_loss', 'scene_loss', 'val_item_loss'):\n"
        "    left.plot(history.history[key], marker='o', label=key)\n"
        "right.plot(history.history['val_ndcg_at_10'], marker='o', label='val NDCG@10')\n"
        "left.legend(); right.legend(); left.set_xlabel('epoch'); right.set_xlabel('epoch')\n"
        "fig.savefig(os.path.join(WORK, 'quickstart_training.png'), dpi=90)"),
    new_markdown_cell("## 5. Recommend for one user (raw ids)"),
    new_code_cell(
        "items, scenes = split.test[0][0][:-1], split.test[1][0][:-1]\n"
        "answer = model.recommend([items], [scenes], k=5)\n"
        "names, scene_names = split.item_vocab.tokens, split.scene_vocab.tokens\n"
        "print('recent:', [f'{names[i]}@{scene_names[s]}' for i, s in zip(items[-5:], scenes[-5:])])\n"
        "print('top 5:', [names[i] for i in answer['item_ids'].numpy()[0]])\n"
        "probs = answer['scene_probs'].numpy()[0]\n"
        "print('next scene:', scene_names[int(probs.argmax())], round(float(probs.max()), 3))"),
    new_markdown_cell("## 6. Export for TF Serving\n\nThe vocabularies travel inside the "
                      "SavedModel: serialized `tf.Example`s of raw ids in, raw ids out. Serve it "
                      "with `dspnet serve --model-base-path quickstart-out/model` or the real "
                      "`tensorflow_model_server`."),
    new_code_cell(
        "from dspnet_tf.export import export_serving_model, make_history_example\n\n"
        "export_dir = export_serving_model(model, os.path.join(WORK, 'model', '1'), None,\n"
        "                                  split.item_vocab.tokens, split.scene_vocab.tokens, top_k=5)\n"
        "served = tf.saved_model.load(export_dir).signatures['serving_default']\n"
        "raw_items = [names[i] for i in items]\n"
        "raw_scenes = [scene_names[s] for s in scenes]\n"
        "out = served(examples=tf.constant([make_history_example(raw_items, raw_scenes)]))\n"
        "[x.decode() for x in out['item_ids'].numpy()[0]]"),
]

if __name__ == "__main__":
    notebook = new_notebook(cells=CELLS, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(notebook, "notebooks/quickstart.ipynb")
    print("wrote notebooks/quickstart.ipynb")
