"""NumPy references of the Transformer block pieces, for the golden-value tests.

Weights are given as a dict keyed by the weight path below the block's name,
e.g. `"self_attention/query/kernel"`.
"""

import math

import numpy as np

_erf = np.vectorize(math.erf)


def set_random_weights(layer, seed=0, scale=0.5):
    """Give every weight of a built layer random values; return them by path."""
    rng = np.random.default_rng(seed)
    weights = {}
    for w in layer.weights:
        value = rng.normal(size=tuple(w.shape)).astype("float32") * scale
        if w.path.endswith("gamma"):
            value = 1.0 + value  # keep layer norm scales around one
        w.assign(value)
        weights[w.path.split("/", 1)[1]] = value
    return weights


def layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


def feed_forward(x, w, prefix, activation, use_bias=True):
    """The FeedForward layer; `w[prefix + "intermediate/kernel"]` etc."""

    def dense(name, inputs):
        out = inputs @ w[f"{prefix}{name}/kernel"]
        return out + w[f"{prefix}{name}/bias"] if use_bias else out

    hidden = dense("intermediate", x)
    if activation == "relu":
        hidden = np.maximum(hidden, 0.0)
    elif activation == "gelu":
        hidden = 0.5 * hidden * (1.0 + _erf(hidden / np.sqrt(2.0)))
    else:  # swiglu: silu(x W) * (x V)
        gate = dense("gate", x)
        hidden = gate / (1.0 + np.exp(-gate)) * hidden
    return dense("output", hidden)


def attention(x, ctx, w, prefix, num_heads, mask=None, causal=False):
    """Multi-head attention with masks (True = allowed); empty rows give zeros."""
    q = np.einsum("btf,fnh->btnh", x, w[f"{prefix}query/kernel"]) + w[f"{prefix}query/bias"]
    k = np.einsum("bsf,fnh->bsnh", ctx, w[f"{prefix}key/kernel"]) + w[f"{prefix}key/bias"]
    v = np.einsum("bsf,fnh->bsnh", ctx, w[f"{prefix}value/kernel"]) + w[f"{prefix}value/bias"]
    b, t, s = x.shape[0], x.shape[1], ctx.shape[1]
    allowed = np.ones((b, t, s), bool) if mask is None else mask.copy()
    if causal:
        allowed &= np.tril(np.ones((t, s), bool), k=s - t)[None]
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(allowed[:, None], logits, -np.inf)
    peak = np.max(np.where(allowed[:, None], logits, -1e30), -1, keepdims=True)
    weights = np.where(allowed[:, None], np.exp(logits - peak), 0.0)
    weights = weights / np.maximum(weights.sum(-1, keepdims=True), 1e-30)
    out = np.einsum("bnts,bsnh->btnh", weights, v)
    out = np.einsum("btnh,nho->bto", out, w[f"{prefix}attention_output/kernel"])
    out = out + w[f"{prefix}attention_output/bias"]
    return out * allowed.any(-1)[..., None], weights


def sublayer(x, w, norm, fn, norm_first, epsilon):
    """Residual sublayer: pre-norm `x + f(ln(x))` or post-norm `ln(x + f(x))`."""
    gamma, beta = w[f"{norm}/gamma"], w[f"{norm}/beta"]
    if norm_first:
        return x + fn(layer_norm(x, gamma, beta, epsilon))
    return layer_norm(x + fn(x), gamma, beta, epsilon)
