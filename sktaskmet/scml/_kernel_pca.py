r"""The whitened RBF kernel-PCA embedding :math:`z(x)` of SCML-Local."""

import torch

__all__ = ["KernelPCAEmbedding"]

# Training points kernel PCA is solved on at most (a random subset above it): the eigen
# problem costs O(landmarks^3) and the Gram matrix O(landmarks^2) memory.
MAX_LANDMARKS = 2000
# Rows embedded at once: bounds the (rows, landmarks) kernel block.
TRANSFORM_CHUNK = 4096
# Components whose eigenvalue is below this many machine epsilons of the largest are
# numerical noise of the eigen-solver; dividing by their root would amplify that noise.
EIGENVALUE_CUTOFF = 1e3


class KernelPCAEmbedding:
    r"""RBF kernel-PCA embedding :math:`z(x)` of SCML-Local, whitened.

    The kernel is :math:`k(u, v) = \exp(-\lVert u - v\rVert^2 / (2\sigma^2))` with
    :math:`\sigma` the median pairwise distance of the landmarks. Kernel PCA is solved on
    at most ``max_landmarks`` training points (all of them when there are fewer; a random
    subset otherwise, so the cost stays :math:`O(\text{landmarks}^2)`), and every point is
    embedded by the centred kernel against the landmarks. Each component is scaled to unit
    variance on the training data so that the local weights see comparable inputs.

    The fitted state is a dict of tensors (``state``), stored by the estimator as numpy.
    """

    max_landmarks = MAX_LANDMARKS

    @staticmethod
    def fit(X, n_components, generator):
        """Fit the embedding on the rows of X; returns its state (a dict of tensors).

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, n_features)
        n_components : int
            Components kept at most (fewer when the kernel has fewer non-negligible ones).
        generator : torch.Generator
            Draws the landmarks when X has more than ``max_landmarks`` rows.
        """
        n = X.shape[0]
        if n > KernelPCAEmbedding.max_landmarks:
            rows = torch.randperm(n, generator=generator, device=X.device)
            landmarks = X[rows[: KernelPCAEmbedding.max_landmarks]]
        else:
            landmarks = X
        sq = torch.cdist(landmarks, landmarks) ** 2
        sigma = _median_distance(sq, X)
        gram = torch.exp(-sq / (2 * sigma**2))
        col_mean = gram.mean(0)
        total_mean = col_mean.mean()
        centred = gram - col_mean[None, :] - col_mean[:, None] + total_mean
        alphas = _whitened_components(centred, n_components)
        state = {
            "landmarks": landmarks,
            "sigma": sigma.reshape(()),
            "alphas": alphas,
            "col_mean": col_mean,
            "total_mean": total_mean.reshape(()),
            "scale": torch.ones(alphas.shape[1], dtype=X.dtype, device=X.device),
        }
        embedded = KernelPCAEmbedding.transform(state, X)
        std = embedded.std(0)
        state["scale"] = torch.where(std > 0, std, torch.ones_like(std))
        return state

    @staticmethod
    def transform(state, X, chunk_size=TRANSFORM_CHUNK):
        """:math:`z(x)` of the rows of X, shape (n_samples, n_components)."""
        blocks = []
        for start in range(0, X.shape[0], chunk_size):
            rows = X[start : start + chunk_size]
            sq = torch.cdist(rows, state["landmarks"]) ** 2
            gram = torch.exp(-sq / (2 * state["sigma"] ** 2))
            centred = (
                gram - state["col_mean"][None, :] - gram.mean(1, keepdim=True) + state["total_mean"]
            )
            blocks.append((centred @ state["alphas"]) / state["scale"])
        return torch.cat(blocks, dim=0)


def _median_distance(sq, X):
    """Root of the median off-diagonal squared distance; 1 when it is 0 or undefined."""
    n = sq.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=X.device)
    sigma = torch.sqrt(torch.median(sq[off_diagonal])) if n > 1 else None
    if sigma is None or not bool(sigma > 0):
        sigma = torch.ones((), dtype=X.dtype, device=X.device)
    return sigma


def _whitened_components(centred, n_components):
    """Leading eigenvectors of the centred Gram matrix, each divided by the root of its
    eigenvalue (the projection coefficients of kernel PCA)."""
    eigenvalues, eigenvectors = torch.linalg.eigh((centred + centred.T) / 2)
    k = min(n_components, centred.shape[0])
    eigenvalues, eigenvectors = eigenvalues.flip(0)[:k], eigenvectors.flip(1)[:, :k]
    info = torch.finfo(centred.dtype)
    # clamp_min(tiny): a largest eigenvalue of 0 (a constant kernel) keeps a cutoff of 0.
    cutoff = EIGENVALUE_CUTOFF * info.eps * eigenvalues[0].clamp_min(info.tiny)
    keep = eigenvalues > cutoff
    if not bool(keep.any()):
        keep[0] = True
    eigenvalues = eigenvalues[keep].clamp_min(info.tiny)
    return eigenvectors[:, keep] / torch.sqrt(eigenvalues)
