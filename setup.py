"""hookestimator: a slim, fast TPUEstimator-style trainer for tf.compat.v1."""
import setuptools

setuptools.setup(
    name='hookestimator',
    version='0.1.0',
    description=('Many training steps per session.run, fed by host threads, '
                 'every moving part a SessionRunHook.'),
    packages=setuptools.find_packages(include=['hookestimator', 'hookestimator.*',
                                               'models', 'models.*']),
    python_requires='>=3.7',
    # TensorFlow itself is chosen per line by the Makefile (tensorflow-cpu
    # 2.15 on Python 3.11, tensorflow 1.15 on Python 3.7).
    install_requires=['gin-config', 'six', 'numpy', 'tqdm', 'scikit-learn'],
    entry_points={'console_scripts': [
        'hookestimator = hookestimator.main:run']},
)
