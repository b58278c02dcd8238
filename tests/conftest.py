"""Test-session environment: an isolated ROS 2 graph per test run.

Every run gets its own ``ROS_DOMAIN_ID`` and localhost-only discovery so parallel runs (or a
developer's live robot) never see each other's topics. Set before any test imports rclpy.
"""

import os

os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 101)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
os.environ.setdefault("PYTHONUNBUFFERED", "1")
