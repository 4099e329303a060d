"""`radcap` with this machine's CPU split into two logical devices.

    python tests/two_cpus.py train --set strategy=mirrored ...

TensorFlow's devices are fixed when it first starts, so the split happens
here, before radcap runs: MirroredStrategy then has two replicas to train on,
as on a machine with two GPUs (tests/test_crash.py, bench/README.md).
"""

import sys

import tensorflow as tf

if __name__ == "__main__":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    from radcap.cli import main

    sys.exit(main(sys.argv[1:]))
