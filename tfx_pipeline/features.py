"""Feature names shared by the ExampleGen, Transform, Trainer and the serving signatures."""

USER_ID = "user_id"
ITEM_HISTORY = "item_history"  # bytes_list: raw item ids, oldest first
SCENE_HISTORY = "scene_history"  # bytes_list: raw scene names, aligned with ITEM_HISTORY
EVENT_COUNT = "event_count"  # int64: events in the example (TFMA's label_key; not a model input)
TARGET_SCENE = "target_scene"  # optional at serving: the scene the list will be shown in

# Transformed (dense int64 [L], left padded, 0 = padding, 1 = OOV) features the model reads.
ITEM_IDS = "item_ids"
SCENE_IDS = "scene_ids"

ITEM_VOCAB = "item_vocab"
SCENE_VOCAB = "scene_vocab"

SPLITS = ("train", "eval", "test")
