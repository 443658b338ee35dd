"""LogME: a cheap transferability score of a feature space for a labelled set.

You, Liu, Wang & Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning" (ICML 2021). For each class, a Bayesian linear regression of the one-hot
target on the features has its evidence (marginal likelihood) maximised over the prior
precision ``alpha`` and the noise precision ``beta`` by the fixed-point updates of
MacKay; the score is the mean log evidence per sample over the classes. It needs one
SVD of the feature matrix and no training of a classifier, so it can rank candidate
spaces before the (costlier) cross-validated search runs on the best of them.

Written here rather than imported: the reference code is a research script, not a
package; the algorithm is twenty lines of numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["logme_score"]


def logme_score(features: np.ndarray, y: np.ndarray, *, max_iter: int = 20) -> float:
    """Mean log evidence per sample of ``y`` given ``features`` (higher transfers better).

    Parameters
    ----------
    features : ndarray of shape (n_samples, n_features)
        Standardized inside (zero mean, unit variance per feature).
    y : array-like of shape (n_samples,)
        Class labels.
    max_iter : int, default=20
        Fixed-point iterations per class.

    Returns
    -------
    float

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> signal = np.eye(3)[y] + 0.3 * rng.normal(size=(300, 3))
    >>> noise = rng.normal(size=(300, 3))
    >>> logme_score(signal, y) > logme_score(noise, y)
    True
    """
    F = np.asarray(features, dtype=np.float64)
    F = F - F.mean(axis=0)
    sd = F.std(axis=0)
    F = F / np.where(sd > 0, sd, 1.0)
    n, d = F.shape
    U, s, _ = np.linalg.svd(F, full_matrices=False)
    sigma = s * s  # eigenvalues of F'F (rank r)
    classes, codes = np.unique(np.asarray(y), return_inverse=True)
    evidences = []
    for k in range(len(classes)):
        t = (codes == k).astype(np.float64)
        z = U.T @ t  # coordinates of the target in the span of F
        rest = max(float(t @ t - z @ z), 0.0)  # part of the target outside that span
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            shrink = beta * sigma / (alpha + beta * sigma)
            gamma = float(shrink.sum())
            m2 = float(np.sum(shrink**2 * z * z / np.maximum(sigma, 1e-300)))  # |m|^2
            res2 = float(np.sum((z * (1 - shrink)) ** 2)) + rest  # |t - F m|^2
            new_alpha = gamma / max(m2, 1e-12)
            new_beta = max(n - gamma, 1e-12) / max(res2, 1e-12)
            done = abs(new_alpha - alpha) / alpha < 1e-3 and abs(new_beta - beta) / beta < 1e-3
            alpha, beta = new_alpha, new_beta
            if done:
                break
        shrink = beta * sigma / (alpha + beta * sigma)
        m2 = float(np.sum(shrink**2 * z * z / np.maximum(sigma, 1e-300)))
        res2 = float(np.sum((z * (1 - shrink)) ** 2)) + rest
        logdet = float(np.sum(np.log(alpha + beta * sigma))) + (d - len(sigma)) * np.log(alpha)
        evidence = (
            0.5 * n * np.log(beta)
            + 0.5 * d * np.log(alpha)
            - 0.5 * n * np.log(2 * np.pi)
            - 0.5 * beta * res2
            - 0.5 * alpha * m2
            - 0.5 * logdet
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))
