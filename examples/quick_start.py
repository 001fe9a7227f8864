"""Quick start: check the installation and show the environment sktaskmet will use.

Run after installing: ``python examples/quick_start.py``. It prints the versions of the
packages sktaskmet builds on and the device that ``device="auto"`` resolves to here, then
fits a small model, so a broken install fails loudly.
"""

import numpy as np
import scipy
import sklearn
import torch
from sklearn.neighbors import KNeighborsRegressor

import sktaskmet
from sktaskmet._backend import resolve_device
from sktaskmet._metric import MahalanobisDistance

print(f"sktaskmet {sktaskmet.__version__}")
print(f"numpy {np.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}")
print(f"torch {torch.__version__}; device='auto' resolves to {resolve_device('auto')}")

# k-nearest neighbours in a Mahalanobis metric that ignores a noise feature.
rng = np.random.RandomState(0)
X = rng.uniform(-1, 1, size=(300, 2))
X[:, 1] *= 20  # a noisy feature on a large scale swamps the Euclidean neighbours
y = np.sin(3 * X[:, 0])
X_test = rng.uniform(-1, 1, size=(100, 2)) * [1, 20]
y_test = np.sin(3 * X_test[:, 0])
euclidean = KNeighborsRegressor(n_neighbors=5).fit(X, y)
metric = MahalanobisDistance(np.diag([1.0, 0.0]))
mahalanobis = KNeighborsRegressor(n_neighbors=5, metric=metric).fit(X, y)
print(f"kNN R^2, Euclidean: {euclidean.score(X_test, y_test):.3f}")
print(f"kNN R^2, Mahalanobis ignoring the noise feature: {mahalanobis.score(X_test, y_test):.3f}")
