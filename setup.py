"""hookestimator: a slim, fast TPUEstimator-style trainer for tf.compat.v1."""
import setuptools

setuptools.setup(
    name='hookestimator',
    version='0.1.0',
    description=('Many training steps per session.run, fed by host threads, '
                 'every moving part a SessionRunHook.'),
    # The repository's models/ and gin/ folders are installed inside the
    # package, as hookestimator.models and hookestimator/configs (the
    # symlinks in hookestimator/ point at them), so that an installed
    # package finds its experiments and claims no top-level name but its
    # own.
    packages=setuptools.find_packages(include=['hookestimator',
                                               'hookestimator.*']),
    package_data={'hookestimator': ['configs/*/*.gin']},
    python_requires='>=3.7',
    # TensorFlow itself is chosen per line by the requirements files
    # (tensorflow-cpu 2.21 on Python 3.12, tensorflow-cpu 2.15 with
    # tensorflow-estimator on Python 3.11, tensorflow 1.15 on Python 3.7).
    install_requires=['gin-config', 'six', 'numpy', 'tqdm', 'scikit-learn',
                      'tensorboard'],
    entry_points={'console_scripts': [
        'hookestimator = hookestimator.main:run']},
)
