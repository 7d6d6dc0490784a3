"""Independent reference implementations (test oracle) of the feature-based
distillation losses: FitNets, AT, NST, VID, CRD and SRM.

Written directly from the published formulas / the authors' public code
(RepDistiller), in plain torch, WITHOUT importing anything from ``relkd``.
Every loss function:

* takes the student's and the teacher's features (student first), followed by
  any learned modules / parameters / state the loss needs, passed explicitly,
* returns the UNWEIGHTED loss as a 0-dim tensor,
* computes in the dtype of its inputs (Python-float constants only),
* never modifies its inputs in place,
* is differentiable w.r.t. the student input (and w.r.t. the passed-in learned
  parameters); the teacher is *not* detached here, callers that want a frozen
  teacher pass a detached tensor.  Exceptions: the CRD memory banks are treated
  as constants (detached), as in RepDistiller's ``ContrastMemory``; the SRM
  teacher codes are computed without gradient (they are targets).

B denotes the batch size.

Spatial convention for feature maps (rank 4, (B, C, H, W)) of different
spatial sizes (``_match_spatial``): the target size is
``(min(Hs, Ht), min(Ws, Wt))`` (each side compared separately) and every map
whose size differs from the target is reduced to it with
``F.adaptive_avg_pool2d``; i.e. the LARGER map is pooled down to the smaller
one.  Channel counts are never touched.  Inputs of any other rank are returned
unchanged.
"""

import torch
import torch.nn.functional as F


def _match_spatial(f_s, f_t):
    """Bring two (B, C, H, W) maps to a common spatial size.

        H = min(Hs, Ht),  W = min(Ws, Wt)
        f -> adaptive_avg_pool2d(f, (H, W))   for each map whose (H, W) differs

    Rank != 4 inputs (either one) are returned unchanged.
    """
    if f_s.dim() != 4 or f_t.dim() != 4:
        return f_s, f_t
    h = min(f_s.shape[2], f_t.shape[2])
    w = min(f_s.shape[3], f_t.shape[3])
    if (f_s.shape[2], f_s.shape[3]) != (h, w):
        f_s = F.adaptive_avg_pool2d(f_s, (h, w))
    if (f_t.shape[2], f_t.shape[3]) != (h, w):
        f_t = F.adaptive_avg_pool2d(f_t, (h, w))
    return f_s, f_t


def conv_reg(f_s, t_shape, weight, bias, bn_weight, bn_bias, eps=1e-5):
    """RepDistiller's ``ConvReg`` (models/util.py), the FitNets regressor, with its layers'
    parameters passed explicitly; BatchNorm in training mode (batch statistics).

        s_H = 2 t_H      ->  conv(weight, stride 2, padding 1)          weight: (Ct, Cs, 3, 3)
        2 s_H = t_H      ->  conv_transpose(weight, stride 2, padding 1) weight: (Cs, Ct, 4, 4)
        s_H >= t_H       ->  conv(weight), no padding                    weight: (Ct, Cs, 1+s_H-t_H, 1+s_W-t_W)
        otherwise        ->  not defined (RepDistiller raises)
        out = relu(batch_norm(x))

    The kernel's shape is checked against the rule, so a regressor of another shape fails here.
    """
    (s_h, s_w), (t_h, t_w) = f_s.shape[2:], tuple(t_shape[2:])
    c_s, c_t = f_s.shape[1], t_shape[1]
    if s_h == 2 * t_h:
        assert tuple(weight.shape) == (c_t, c_s, 3, 3), weight.shape
        x = F.conv2d(f_s, weight, bias, stride=2, padding=1)
    elif 2 * s_h == t_h:
        assert tuple(weight.shape) == (c_s, c_t, 4, 4), weight.shape
        x = F.conv_transpose2d(f_s, weight, bias, stride=2, padding=1)
    elif s_h >= t_h:
        assert tuple(weight.shape) == (c_t, c_s, 1 + s_h - t_h, 1 + s_w - t_w), weight.shape
        x = F.conv2d(f_s, weight, bias)
    else:
        raise NotImplementedError(f"student size {s_h}, teacher size {t_h}")
    x = F.batch_norm(x, None, None, bn_weight, bn_bias, training=True, eps=eps)
    return torch.relu(x)


def fitnet_loss(f_s, f_t, weight, bias, bn_weight=None, bn_bias=None):
    """FitNets hint loss (Romero et al., ICLR 2015), as RepDistiller computes it.

        maps (B, C, H, W):  r = conv_reg(f_s, f_t.shape, ...)   (the teacher's shape; no pooling)
        vectors (B, D):     r = f_s W^T + b
        loss = mean over all elements of (r - f_t)^2
    """
    if f_s.dim() == 4:
        r = conv_reg(f_s, f_t.shape, weight, bias, bn_weight, bn_bias)
    else:
        r = f_s @ weight.t() + bias
    return ((r - f_t) ** 2).mean()


def _attention(f, p):
    """a(f) = F.normalize( mean_c |f|^p , flattened to (B, H*W) ),  L2 over positions."""
    return F.normalize(f.abs().pow(p).mean(dim=1).reshape(f.shape[0], -1), p=2, dim=1)


def at_loss(f_s, f_t, p=2.0):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017): the paper's sum of |A_c|^p
    (RepDistiller's f^p is the same for p = 2).

        f_s, f_t = _match_spatial(f_s, f_t)
        a(f)     = normalize( (1/C) sum_c |f[:, c]|^p  reshaped to (B, H*W),  dim=1 )
                   (|f|^p is the ELEMENT-WISE power; L2-normalised over positions)
        loss     = (1/(B*H*W)) * sum_{b,k} (a(f_s)[b,k] - a(f_t)[b,k])^2

    Meant for (B, C, H, W) maps; channel counts may differ.
    """
    f_s, f_t = _match_spatial(f_s, f_t)
    return ((_attention(f_s, p) - _attention(f_t, p)) ** 2).mean()


def _poly_kernel(a, b):
    """K(a, b)[n, i, j] = (a[n, i] . b[n, j])^2     a: (B, Ca, L), b: (B, Cb, L)."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2)


def nst_loss(f_s, f_t):
    """Neural-selectivity transfer (Huang & Wang, 2017), polynomial kernel
    k(x, y) = (x . y)^2  (d = 2, c = 0), squared-MMD form as in RepDistiller.

        f_s, f_t = _match_spatial(f_s, f_t)
        s = normalize(f_s.view(B, Cs, H*W), dim=2)     (each channel L2-normalised)
        t = normalize(f_t.view(B, Ct, H*W), dim=2)
        K(a, b)[n, i, j] = (a[n, i] . b[n, j])^2
        loss = mean(K(t, t)) + mean(K(s, s)) - 2 * mean(K(s, t))

    Each mean is over all entries of its (B, Ci, Cj) tensor; Cs may differ from Ct.
    """
    f_s, f_t = _match_spatial(f_s, f_t)
    batch_size = f_s.shape[0]
    s = F.normalize(f_s.reshape(batch_size, f_s.shape[1], -1), p=2, dim=2)
    t = F.normalize(f_t.reshape(batch_size, f_t.shape[1], -1), p=2, dim=2)
    return (_poly_kernel(t, t).mean() + _poly_kernel(s, s).mean()
            - 2.0 * _poly_kernel(s, t).mean())


def vid_loss(f_s, f_t, mean_fn, log_scale, eps=1e-5):
    """Variational information distillation (Ahn et al., CVPR 2019).

        f_s, f_t = _match_spatial(f_s, f_t)
        mu   = mean_fn(f_s)                                  (same shape as f_t)
        var  = softplus(log_scale) + eps = log(1 + exp(log_scale)) + eps
               log_scale: (Ct,), broadcast as (1, Ct, 1, 1) for maps, (1, Ct) for vectors
        loss = mean over all elements of 0.5 * ( (mu - f_t)^2 / var + log(var) )
    """
    f_s, f_t = _match_spatial(f_s, f_t)
    mu = mean_fn(f_s)
    var = F.softplus(log_scale) + eps
    var = var.reshape((1, -1) + (1,) * (f_t.dim() - 2))
    return (0.5 * ((mu - f_t) ** 2 / var + torch.log(var))).mean()


def _nce(x, n_data, eps=1e-7):
    """NCE loss of a score matrix x (B, K+1); column 0 = positive.

        m = K,  Pn = 1/N
        log_D1 = log( x[:, 0]  / (x[:, 0]  + m*Pn + eps) )
        log_D0 = log( (m*Pn)   / (x[:, 1:] + m*Pn + eps) )
        nce    = -(sum log_D1 + sum log_D0) / B
    """
    batch_size = x.shape[0]
    m = x.shape[1] - 1
    m_pn = m * (1.0 / float(n_data))
    pos = x[:, 0]
    neg = x[:, 1:]
    log_d1 = torch.log(pos / (pos + (m_pn + eps)))
    log_d0 = torch.log(m_pn / (neg + (m_pn + eps)))
    return -(log_d1.sum() + log_d0.sum()) / batch_size


def crd_loss(f_s, f_t, w_s, b_s, w_t, b_t, memory_s, memory_t, index, negatives,
             temperature, z_s, z_t):
    """Contrastive representation distillation (Tian et al., ICLR 2020), NCE form
    as in RepDistiller (CRDLoss / ContrastMemory / ContrastLoss), ONE step with the
    given state (no memory update, no sampling: the negatives are given).

        f_s -> (B, Ds), f_t -> (B, Dt)                   (reshape(B, -1))
        e_s = normalize(f_s @ w_s^T + b_s, dim=1)        w_s: (F, Ds), b_s: (F,)
        e_t = normalize(f_t @ w_t^T + b_t, dim=1)
        idx = cat([index[:, None], negatives], dim=1)    (B, K+1); column 0 = positive
        out_s[b, k] = exp( memory_t[idx[b, k]] . e_s[b] / T ) / z_s
        out_t[b, k] = exp( memory_s[idx[b, k]] . e_t[b] / T ) / z_t
        loss = nce(out_s) + nce(out_t)      (see _nce; N = memory rows, m = K, eps = 1e-7)

    memory_s holds student embeddings, memory_t teacher ones, both (N, F); they are
    detached (constants).  z_s, z_t are the (given) normalisation constants.
    """
    batch_size = f_s.shape[0]
    x_s = f_s.reshape(batch_size, -1)
    x_t = f_t.reshape(batch_size, -1)
    e_s = F.normalize(x_s @ w_s.t() + b_s, p=2, dim=1)
    e_t = F.normalize(x_t @ w_t.t() + b_t, p=2, dim=1)

    idx = torch.cat([index.reshape(-1, 1), negatives], dim=1)
    k1 = idx.shape[1]
    n_data = memory_s.shape[0]
    feat = memory_s.shape[1]

    mem_t_rows = memory_t.detach().index_select(0, idx.reshape(-1)).reshape(batch_size, k1, feat)
    mem_s_rows = memory_s.detach().index_select(0, idx.reshape(-1)).reshape(batch_size, k1, feat)

    # scores[b, k] = <memory[idx[b, k]], e[b]>
    score_s = torch.bmm(mem_t_rows, e_s.unsqueeze(2)).squeeze(2)
    score_t = torch.bmm(mem_s_rows, e_t.unsqueeze(2)).squeeze(2)
    out_s = torch.exp(score_s / temperature) / z_s
    out_t = torch.exp(score_t / temperature) / z_t

    return _nce(out_s, n_data) + _nce(out_t, n_data)


def crd_memory_update(memory, embeddings, index, momentum):
    """CRD memory-bank momentum update (RepDistiller ContrastMemory), out of place.

        new = memory.clone()
        new[index] = normalize( memory[index] * momentum + embeddings * (1 - momentum), dim=1 )

    Returns a NEW tensor (no autograd history; RepDistiller does this under
    no_grad); ``memory`` is left unchanged.  Rows not in ``index`` are copied.
    """
    with torch.no_grad():
        rows = memory.index_select(0, index) * momentum + embeddings * (1.0 - momentum)
        rows = F.normalize(rows, p=2, dim=1)
        return memory.index_copy(0, index, rows.to(memory.dtype))


def srm_codes(f_t, dictionary, bias, k):
    """Sparse teacher codes of SRM (Tran et al., 2021), computed WITHOUT gradient.

        x     = f_t permuted to (B, H, W, Ct)           (one Ct-vector per pixel)
        a     = sigmoid(x @ dictionary + bias)          dictionary: (Ct, M), bias: 1 element
        codes = a * [a >= k-th largest of a over M]     (top-k per pixel, others 0;
                                                         ties may keep more than k)

    Returns codes of shape (B, H, W, M) (no autograd history).
    """
    with torch.no_grad():
        x = f_t.permute(0, 2, 3, 1)
        a = torch.sigmoid(x @ dictionary + bias)
        kth = torch.topk(a, k, dim=-1).values[..., -1:]
        return torch.where(a >= kth, a, torch.zeros_like(a))


def srm_loss(f_s, f_t, head_centers, head_intercept, dictionary, bias, k,
             pixel_weight=1.0, image_weight=1.0):
    """Sparse representation matching (Tran et al., 2021).

        f_s, f_t = _match_spatial(f_s, f_t)
        codes    = srm_codes(f_t, dictionary, bias, k)          (B, H, W, M), no gradient
        y[b,h,w] = argmax_m codes[b,h,w,m]                      (pixel labels)
        q[b,m]   = mean_{h,w} codes[b,h,w,m]                    (image labels)
        z[b,m,h,w] = sum_c f_s[b,c,h,w] head_centers[c,m] + head_intercept   (the authors' head:
                     centers (Cs, M), ONE scalar intercept; viebboy/SRM cifar100/code/Layers.py)
        pixel    = mean_{b,h,w} -( z[b,y,h,w] - logsumexp_m z[b,m,h,w] )
        p[b,m]   = mean_{h,w} sigmoid(z[b,m,h,w])
        image    = mean_{b,m} -( q log p + (1 - q) log(1 - p) )
                   (each log clamped at -100, as in F.binary_cross_entropy)
        loss     = pixel_weight * pixel + image_weight * image
    """
    f_s, f_t = _match_spatial(f_s, f_t)
    codes = srm_codes(f_t, dictionary, bias, k)
    y = codes.argmax(dim=-1)
    q = codes.mean(dim=(1, 2))

    assert head_intercept.numel() == 1
    z = torch.einsum('bchw,cm->bmhw', f_s, head_centers) + head_intercept.reshape(())

    z_pix = z.permute(0, 2, 3, 1)                                   # (B, H, W, M)
    z_y = z_pix.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    pixel = (-(z_y - torch.logsumexp(z_pix, dim=-1))).mean()

    p = torch.sigmoid(z).mean(dim=(2, 3))
    log_p = torch.clamp(torch.log(p), min=-100.0)
    log_1mp = torch.clamp(torch.log(1.0 - p), min=-100.0)
    image = (-(q * log_p + (1.0 - q) * log_1mp)).mean()

    return pixel_weight * pixel + image_weight * image
