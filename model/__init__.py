"""mhc_model: the mHC network, its tokenizers, losses, training and FLOP counting (no ROS, no PyBullet).

Main entry points: ``config.MHCConfig``/``config.preset``, ``mhc.MHC``, ``policy.MHCPolicy``,
``checkpoint.load_policy``/``save_checkpoint``, ``train.configure_parser``/``run``,
``flops.configure_parser``/``run``.
"""
