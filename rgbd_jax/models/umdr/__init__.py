"""The journal networks (UMDR, TPAMI 2023; zhoubenjia/MotionRGBD-PAMI).

dsn_v2.py: DSNNetV2, the unimodal network (stem, SMS blocks with one RCM per
stage, channel pooling, LinearMap, DTNNetV2); dtn_v2.py: DTNNetV2, the
multi-branch temporal network; fusion.py: the RGB-D fusion that
`train_fusion.py` trains on two frozen DSNNetV2 streams. Module names follow
the original's state_dict keys (`stem.0`, `SMS_layers.1.q`,
`dtn.multi_scale_transformers.0.2.layers.3`, ...), so the converter maps
tensors by name. The layers are the conference port's (`models/layers.py`,
`models/attention.py`).
"""
