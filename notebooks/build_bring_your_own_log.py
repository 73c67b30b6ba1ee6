"""Writes notebooks/bring_your_own_log.ipynb from the cells below (the notebook is committed
unexecuted, like the quickstart; edit here, re-run `python notebooks/build_bring_your_own_log.py`,
and tests/e2e/test_notebook.py executes the result with small parameters).

The notebook: a user's own CSV event log -> `dspnet pipeline run` -> `dspnet serve` -> in-scene
requests from Python (gRPC client and one REST call) -> SIGTERM.
"""

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PARAMETERS = (
    "# Parameters (a test or papermill may override them in a cell right below this one).\n"
    "NUM_USERS = 500        # users in the synthetic log; replace the log with yours below\n"
    "NUM_ITEMS = 400        # catalog size\n"
    "EPOCHS = 20            # training epochs of the pipeline's Trainer\n"
    "MAX_LEN = 50           # events of history the model reads\n"
    "ITEM_DIM, SCENE_DIM = 64, 16\n"
    "BATCH_SIZE = 64\n"
    "OUT_DIR = 'byol-out'   # the CSV, the pipeline's output and the server log go here\n"
    "SEED = 0")

CELLS = [
    new_markdown_cell(
        "# Bring your own event log\n\n"
        "From a CSV export of your own events to a served, scene-aware recommender:\n\n"
        "1. write the event log the pipeline reads (here a synthetic one, made the way you would "
        "export yours: one row per event, `user_id, item_id, scene, timestamp`);\n"
        "2. train, evaluate and push a model with `dspnet pipeline run` (the TFX pipeline: "
        "ExampleGen -> statistics, schema, validation -> Transform -> Trainer -> Evaluator -> "
        "Pusher);\n"
        "3. serve the pushed model with `dspnet serve` (TF Serving's gRPC and REST APIs);\n"
        "4. ask for one user's recommendations *in a scene*: the list for the feed, for search "
        "and for the cart, plus where the user goes next; one REST call;\n"
        "5. stop the server.\n\n"
        "On 2 CPU cores the default settings take 2 to 3 minutes, most of it the pipeline. The "
        "first code cell holds the settings; to use your own data, point `EVENTS` (section 1) at "
        "your file or folder and skip the synthetic log."),
    new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
    new_code_cell(
        "import json\n"
        "import os\n"
        "import signal\n"
        "import subprocess\n"
        "import sys\n"
        "import time\n\n"
        "import numpy as np\n"
        "import pandas as pd\n\n"
        "os.makedirs(OUT_DIR, exist_ok=True)\n"
        "EVENTS = os.path.join(OUT_DIR, 'my_events.csv')\n"
        "PIPELINE_OUT = os.path.join(OUT_DIR, 'pipeline')\n"
        "# The `dspnet` command of this kernel's environment (else the same CLI as a module).\n"
        "DSPNET = [os.path.join(os.path.dirname(sys.executable), 'dspnet')]\n"
        "if not os.path.exists(DSPNET[0]):\n"
        "    DSPNET = [sys.executable, '-m', 'dspnet_tf.cli']\n"
        "QUIET = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')  # no TensorFlow C++ chatter in logs"),
    new_markdown_cell(
        "## 1. The event log\n\n"
        "One row per event, as CSV with a header (or Parquet; or a folder of such files, read "
        "in name order):\n\n"
        "| column | what | example |\n"
        "|---|---|---|\n"
        "| `user_id` | who acted; any string | `u00042` |\n"
        "| `item_id` | what they acted on; any string | `sku-0131` |\n"
        "| `scene` | where it happened: the surface or context (feed, search, cart, live, "
        "messages, ...); any string | `search` |\n"
        "| `timestamp` | when, as a non-negative integer (seconds, milliseconds: only the order "
        "matters) | `1700012345` |\n\n"
        "Columns may come in any order, extra columns (`device` below) are ignored, spaces around "
        "values are stripped, a spreadsheet's UTF-8 byte-order mark and CRLF line ends are fine, "
        "and rows need not be sorted: each user's events are sorted by time (ties keep file "
        "order). A row with an empty id or scene, a timestamp that is not an integer (`noon`, "
        "`1.5`), or the wrong number of fields stops the run with one `error:` line naming the "
        "file, line, field and value; `dspnet pipeline run --skip-malformed` skips and counts such "
        "rows instead. Users with fewer than 3 events are dropped (one event is held out for "
        "evaluation, one for validation). The full table is in `docs/event-log.md`.\n\n"
        "The synthetic shop below behaves differently in each scene, which is what a "
        "scene-aware model can learn:\n"
        "- **feed**: mostly the shop's popular items, whatever the user likes;\n"
        "- **search**: items of the category the user is shopping for right now (an intent "
        "that drifts between two favourite categories);\n"
        "- **cart**: one of the last few items the user searched for;\n"
        "- and users move between scenes with different odds (search often leads to the cart, "
        "the cart back to the feed)."),
    new_code_cell(
        "rng = np.random.default_rng(SEED)\n"
        "NUM_CATEGORIES = 8\n"
        "items = np.array([f'sku-{i:04d}' for i in range(NUM_ITEMS)])\n"
        "category = rng.integers(0, NUM_CATEGORIES, NUM_ITEMS)\n"
        "popularity = 1.0 / np.arange(1, NUM_ITEMS + 1) ** 1.1   # a long tail ...\n"
        "popularity = popularity[rng.permutation(NUM_ITEMS)]       # ... over shuffled items\n"
        "popularity /= popularity.sum()\n"
        "SCENES = ['feed', 'search', 'cart']\n"
        "NEXT_SCENE = {'feed': [0.5, 0.4, 0.1], 'search': [0.25, 0.4, 0.35], 'cart': [0.6, 0.3, 0.1]}\n\n"
        "rows = []\n"
        "for user in range(NUM_USERS):\n"
        "    liked = rng.choice(NUM_CATEGORIES, 2, replace=False)\n"
        "    intent, searched, scene = rng.choice(liked), [], 'feed'\n"
        "    stamp = 1_700_000_000 + int(rng.integers(0, 30 * 86_400))\n"
        "    for _ in range(int(rng.integers(12, 40))):\n"
        "        if scene == 'feed':\n"
        "            item = rng.choice(NUM_ITEMS, p=popularity)\n"
        "        elif scene == 'search':\n"
        "            if rng.random() < 0.2:\n"
        "                intent = rng.choice(liked)\n"
        "            pool = np.flatnonzero(category == intent)\n"
        "            item = rng.choice(pool, p=popularity[pool] / popularity[pool].sum())\n"
        "            searched.append(item)\n"
        "        else:  # cart\n"
        "            recent = searched[-5:]\n"
        "            item = rng.choice(recent) if recent else rng.choice(NUM_ITEMS, p=popularity)\n"
        "        rows.append((stamp, f'u{user:05d}', items[item], scene,\n"
        "                     rng.choice(['ios', 'android', 'web'])))\n"
        "        stamp += 1 + int(rng.exponential(90))\n"
        "        scene = rng.choice(SCENES, p=NEXT_SCENE[scene])\n\n"
        "# An export as a database or analytics tool would write it: its own column order, an\n"
        "# extra column, rows not grouped by user.\n"
        "log = pd.DataFrame(rows, columns=['timestamp', 'user_id', 'item_id', 'scene', 'device'])\n"
        "log = log.sample(frac=1.0, random_state=SEED)\n"
        "log.to_csv(EVENTS, index=False)\n"
        "print(f'{EVENTS}: {len(log):,} events, {log.user_id.nunique()} users, '\n"
        "      f'{log.item_id.nunique()} items')\n"
        "print(open(EVENTS).read().splitlines()[:4])\n"
        "log.scene.value_counts()"),
    new_markdown_cell(
        "Before a pipeline run, read the file the way the pipeline will (same reader, same "
        "errors): a bad row fails here in a second rather than minutes into the run."),
    new_code_cell(
        "from dspnet_tf.data.event_log import read_event_log\n\n"
        "checked = read_event_log(EVENTS)\n"
        "print(f'{len(checked):,} events read from {checked.report.files}; '\n"
        "      f'scenes: {sorted(set(checked.scenes))}')"),
    new_markdown_cell(
        "## 2. `dspnet pipeline run`\n\n"
        "The TFX pipeline runs locally (Beam's DirectRunner, SQLite metadata, caching: a rerun "
        "on an unchanged log comes from the cache). Its Evaluator ranks each user's held-out "
        "last event against the whole catalog and blesses the model only if its in-scene "
        "NDCG@10 reaches `--ndcg-floor` (default 0) and is not below the last blessed model's; "
        "the Pusher then writes a new version folder under `<out>/serving/dspnet/`. The "
        "pipeline's full log goes to a file; the cell shows its summary lines and the Trainer's "
        "epochs."),
    new_code_cell(
        "command = DSPNET + ['pipeline', 'run', '--data', EVENTS, '--out', PIPELINE_OUT,\n"
        "                    '--epochs', str(EPOCHS), '--max-len', str(MAX_LEN),\n"
        "                    '--batch-size', str(BATCH_SIZE), '--item-dim', str(ITEM_DIM),\n"
        "                    '--scene-dim', str(SCENE_DIM)]\n"
        "print('$ dspnet ' + ' '.join(command[len(DSPNET):]))\n"
        "pipeline_log = os.path.join(OUT_DIR, 'pipeline.log')\n"
        "started = time.time()\n"
        "with open(pipeline_log, 'w') as log_file:\n"
        "    code = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT,\n"
        "                          env=QUIET).returncode\n"
        "lines = open(pipeline_log).read().splitlines()\n"
        "for line in lines:\n"
        "    if line.startswith(('==>', 'dspnet ')) or ' - loss: ' in line:\n"
        "        print(line)\n"
        "if code != 0:\n"
        "    print('\\n'.join(lines[-30:]))\n"
        "    raise RuntimeError(f'dspnet pipeline run failed (exit {code}); see {pipeline_log}')\n"
        "print(f'pipeline: {time.time() - started:.0f} s')"),
    new_markdown_cell(
        "The pushed model: one folder per version (TF Serving's layout), each a SavedModel with "
        "the vocabularies inside, so requests carry your raw ids and scene names."),
    new_code_cell(
        "serving_dir = os.path.join(PIPELINE_OUT, 'serving', 'dspnet')\n"
        "versions = sorted((d for d in os.listdir(serving_dir) if d.isdigit()), key=int)\n"
        "version_dir = os.path.join(serving_dir, versions[-1])\n"
        "print('versions:', versions)\n"
        "for root, dirs, files in sorted(os.walk(version_dir)):\n"
        "    depth = root[len(version_dir):].count(os.sep)\n"
        "    print('  ' * depth + (os.path.basename(root) or root) + '/')\n"
        "    for name in sorted(files):\n"
        "        print('  ' * (depth + 1) + name)"),
    new_markdown_cell(
        "The Evaluator's numbers (TFMA, on the eval split: every user's last event ranked "
        "against the whole catalog):\n"
        "- **next-event** NDCG@10 / HR@10: the model is told nothing about the held-out event;\n"
        "- **in-scene** NDCG@10 / HR@10: the model is told the scene the event happened in, as "
        "a served request that names its `target_scene` is. This is the number that decides "
        "the blessing."),
    new_code_cell(
        "import glob\n"
        "import tensorflow as tf\n"
        "import tensorflow_model_analysis as tfma\n\n"
        "tf.get_logger().setLevel('ERROR')  # TFMA's reader warns about a deprecated TF API\n"
        "evaluator = os.path.join(PIPELINE_OUT, 'pipeline_root', 'Evaluator')\n"
        "latest = max(glob.glob(os.path.join(evaluator, 'evaluation', '*')), key=os.path.getmtime)\n"
        "metrics = {}\n"
        "for record in tfma.load_metrics(latest):\n"
        "    for key_and_value in record.metric_keys_and_values:\n"
        "        metrics[key_and_value.key.name] = key_and_value.value.double_value.value\n"
        "blessed = bool(glob.glob(os.path.join(evaluator, 'blessing', '*', 'BLESSED')))\n"
        "print(f\"eval users: {metrics['example_count']:.0f}   blessed: {blessed}\")\n"
        "print(f\"next-event NDCG@10 {metrics['ndcg@10']:.4f}   HR@10 {metrics['hr@10']:.4f}\")\n"
        "print(f\"in-scene   NDCG@10 {metrics['in_scene_ndcg@10']:.4f}   \"\n"
        "      f\"HR@10 {metrics['in_scene_hr@10']:.4f}\")"),
    new_markdown_cell(
        "## 3. `dspnet serve`\n\n"
        "The server runs in its own process, bound to 127.0.0.1 only, on ports the system picks "
        "(`--port 0 --rest-port 0`; it prints the ones it got). Its output goes to a file, not "
        "a pipe: a pipe nobody reads fills up and blocks the server. It polls the folder, so a "
        "later pipeline run that pushes a new version is picked up without a restart. "
        "`DSPnetClient.wait_until_ready` waits until a version is loaded."),
    new_code_cell(
        "import atexit\n"
        "import re\n\n"
        "from serving.client import DSPnetClient\n\n"
        "server_log = os.path.join(OUT_DIR, 'server.log')\n"
        "with open(server_log, 'w') as log_file:  # the server keeps its own copy of the file\n"
        "    server = subprocess.Popen(\n"
        "        DSPNET + ['serve', '--model-base-path', serving_dir, '--host', '127.0.0.1',\n"
        "                  '--port', '0', '--rest-port', '0'],\n"
        "        stdout=log_file, stderr=subprocess.STDOUT, env=QUIET)\n"
        "with open(os.path.join(OUT_DIR, 'server.pid'), 'w') as pid_file:\n"
        "    pid_file.write(str(server.pid))\n"
        "# If this kernel exits before section 5 runs, stop the server with it.\n"
        "atexit.register(lambda: server.poll() is None and server.send_signal(signal.SIGTERM))\n\n"
        "# The line `serving 'dspnet': gRPC 127.0.0.1:<port>, REST http://127.0.0.1:<port>`.\n"
        "deadline = time.time() + 180\n"
        "while True:\n"
        "    found = re.search(r'gRPC 127\\.0\\.0\\.1:(\\d+), REST (?:https?://)?127\\.0\\.0\\.1:(\\d+)',\n"
        "                      open(server_log).read())\n"
        "    if found or server.poll() is not None or time.time() > deadline:\n"
        "        break\n"
        "    time.sleep(0.5)\n"
        "if not found:\n"
        "    print(open(server_log).read()[-3000:])\n"
        "    raise RuntimeError(f'the server did not start (exit code {server.poll()})')\n"
        "GRPC, REST = f'127.0.0.1:{found[1]}', f'http://127.0.0.1:{found[2]}'\n"
        "client = DSPnetClient(GRPC, timeout=30)\n"
        "print(f'gRPC {GRPC}, REST {REST}: serving version {client.wait_until_ready(timeout=120)}')"),
    new_markdown_cell(
        "## 4. In-scene requests\n\n"
        "One user's history, oldest first, as raw item ids and scene names. The same history is "
        "asked three times, once per `target_scene` (the surface that will show the list), and "
        "once without one (next event, wherever it happens). The answer also carries the "
        "next-scene distribution."),
    new_code_cell(
        "# The most active user; their last event is kept out of the request.\n"
        "user = log.user_id.value_counts().index[0]\n"
        "mine = log[log.user_id == user].sort_values('timestamp', kind='stable')\n"
        "history_items, history_scenes = list(mine.item_id[:-1]), list(mine.scene[:-1])\n"
        "print(f'user {user}: {len(mine)} events; the last 6 before the held-out one:')\n"
        "print('  ' + ', '.join(f'{i}@{s}' for i, s in zip(history_items[-6:], history_scenes[-6:])))\n"
        "print(f'  held out: {mine.item_id.iloc[-1]}@{mine.scene.iloc[-1]}')\n\n"
        "K = 10\n"
        "lists = {scene: client.recommend(history_items, history_scenes, target_scene=scene, k=K)\n"
        "         for scene in SCENES}\n"
        "lists['(no target)'] = client.recommend(history_items, history_scenes, k=K)\n"
        "table = pd.DataFrame({scene: answer.items for scene, answer in lists.items()},\n"
        "                     index=pd.RangeIndex(1, K + 1, name='rank'))\n"
        "table"),
    new_markdown_cell(
        "How the lists differ, and whether they differ the way the scenes do: the share of each "
        "list that is among the shop's most popular items (what the feed shows), in a category "
        "the user has searched (what search shows), or among the user's last five searches "
        "(what goes into the cart). With few users or epochs the lists barely differ; the "
        "default settings show the difference."),
    new_code_cell(
        "from itertools import combinations\n\n"
        "for a, b in combinations(SCENES, 2):\n"
        "    same = len(set(lists[a].items) & set(lists[b].items))\n"
        "    print(f'{a:>6} vs {b:<6}: {same}/{K} items in common, same order: '\n"
        "          f'{lists[a].items == lists[b].items}')\n\n"
        "def category_of(item_id):  # 'sku-0042' -> the synthetic catalog's category of item 42\n"
        "    return category[int(item_id[4:])]\n\n"
        "popular = set(items[np.argsort(-popularity)[:2 * K]])\n"
        "searches = [i for i, s in zip(history_items, history_scenes) if s == 'search']\n"
        "searched_categories = {category_of(i) for i in searches}\n"
        "pd.DataFrame({\n"
        "    scene: {'shop top 20': np.mean([i in popular for i in answer.items]),\n"
        "            'a category the user searched': np.mean(\n"
        "                [category_of(i) in searched_categories for i in answer.items]),\n"
        "            \"one of the user's last 5 searches\": np.mean(\n"
        "                [i in searches[-5:] for i in answer.items])}\n"
        "    for scene, answer in lists.items()}).round(2)"),
    new_code_cell(
        "print(f'next scene for {user} (model version {lists[\"feed\"].model_version}):')\n"
        "for scene, probability in lists['(no target)'].next_scenes:\n"
        "    print(f'  {scene:<8} {probability:.3f}')\n"
        "print(f'(the held-out event happened in: {mine.scene.iloc[-1]})')"),
    new_markdown_cell(
        "The same server over REST (TF Serving's API; any HTTP client). The `predict_raw` "
        "signature takes dense string histories (pad shorter rows with `\"\"`); the default "
        "signature takes serialized `tf.Example`s, as `{\"b64\": ...}`, which may carry a "
        "`target_scene` (see `docs/serving.md`)."),
    new_code_cell(
        "import urllib.request\n\n"
        "body = {'signature_name': 'predict_raw',\n"
        "        'instances': [{'item_history': history_items, 'scene_history': history_scenes}]}\n"
        "request = urllib.request.Request(f'{REST}/v1/models/dspnet:predict',\n"
        "                                 data=json.dumps(body).encode(),\n"
        "                                 headers={'Content-Type': 'application/json'})\n"
        "with urllib.request.urlopen(request, timeout=30) as response:\n"
        "    rest_answer = json.load(response)\n"
        "prediction = rest_answer['predictions'][0]\n"
        "print('REST top items:', prediction['item_ids'][:K])\n"
        "print('REST next scene:', dict(zip(prediction['scene_ids'],\n"
        "                                   np.round(prediction['scene_probs'], 3))))\n"
        "print('same as the gRPC answer without a target:',\n"
        "      prediction['item_ids'][:K] == lists['(no target)'].items)"),
    new_markdown_cell(
        "## 5. Stop the server\n\n"
        "Run this cell even if a cell above failed. SIGTERM stops the server cleanly: new "
        "connections are refused and requests in flight finish."),
    new_code_cell(
        "try:\n"
        "    client.close()\n"
        "except NameError:\n"
        "    pass  # the client was never made\n"
        "if server.poll() is None:\n"
        "    server.send_signal(signal.SIGTERM)\n"
        "    try:\n"
        "        server.wait(timeout=30)\n"
        "    except subprocess.TimeoutExpired:\n"
        "        server.kill()\n"
        "        server.wait()\n"
        "print(f'server exit code: {server.returncode}')\n"
        "print(''.join(open(server_log).readlines()[-3:]))"),
    new_markdown_cell(
        "## Next steps\n\n"
        "- Your data: set `EVENTS` to your export (a file or a folder of `.csv` / `.parquet` "
        "files) and run from section 2. A large log? Parquet and CSV are streamed; "
        "`--max-events` keeps each user's latest events.\n"
        "- Settings: `dspnet pipeline run --help`, or a JSON file of model and training "
        "options with `--config` (`docs/configuration.md`).\n"
        "- Push only better models: `--ndcg-floor 0.05`; a rerun keeps serving the last blessed "
        "version when the new one is worse.\n"
        "- Production serving: the pushed folder runs unchanged on TF Serving's "
        "`tensorflow_model_server` (Docker and Kubernetes configs in `serving/deploy/`, "
        "`docs/serving.md`)."),
]


def build() -> nbformat.NotebookNode:
    notebook = new_notebook(cells=CELLS, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    # Stable cell ids: rebuilding an unchanged script rewrites the same file.
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"byol-{index:02d}"
    return notebook


if __name__ == "__main__":
    nbformat.write(build(), "notebooks/bring_your_own_log.ipynb")
    print("wrote notebooks/bring_your_own_log.ipynb")
