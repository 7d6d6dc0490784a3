"""Independent reference implementations (test oracle) of the distillation losses.

Written directly from the published formulas, in plain torch, WITHOUT importing
anything from ``relkd``.  Every function:

* takes the student's and the teacher's features (student first),
* returns the UNWEIGHTED loss as a 0-dim tensor,
* computes in the dtype of its inputs (Python-float constants only),
* never modifies its inputs in place,
* is differentiable w.r.t. the student input (the teacher is *not* detached
  here; callers that want a frozen teacher pass a detached tensor).

B denotes the batch size.  Student and teacher feature widths may differ for the
relation-based losses (they only compare B x B or B x B x B relation tensors).
Inputs of rank > 2 given to the relation losses are flattened per sample to
(B, D) with ``reshape(B, -1)``; for (B, D) inputs this is a no-op.
"""

import math

import torch
import torch.nn.functional as F


def kd_loss(student_logits, teacher_logits, T=4.0):
    """Hinton knowledge distillation.

        p_t = softmax(t / T),  p_s = softmax(s / T)          (over classes)
        loss = T^2 * (1/B) * sum_b sum_c p_t[b,c] * (log p_t[b,c] - log p_s[b,c])

    i.e. T^2 * KL(p_t || p_s), summed over classes, averaged over the batch.
    Terms with p_t == 0 contribute 0 (the 0 * log 0 = 0 convention).
    """
    log_p_s = torch.log_softmax(student_logits / T, dim=1)
    log_p_t = torch.log_softmax(teacher_logits / T, dim=1)
    p_t = log_p_t.exp()
    terms = p_t * (log_p_t - log_p_s)
    terms = torch.where(p_t > 0, terms, torch.zeros_like(terms))
    batch_size = student_logits.shape[0]
    return (T * T) * terms.sum() / batch_size


def sp_loss(f_s, f_t):
    """Similarity-Preserving KD (Tung & Mori, ICCV 2019).

        F   = feature map flattened per sample, shape (B, D)  (any rank >= 2 input)
        G   = F F^T                                              (B x B)
        G~  = G with every row L2-normalised (F.normalize(G, dim=1))
        loss = (1/B^2) * sum_{i,j} (G~_s[i,j] - G~_t[i,j])^2
    """
    batch_size = f_s.shape[0]
    a_s = f_s.reshape(batch_size, -1)
    a_t = f_t.reshape(batch_size, -1)
    g_s = F.normalize(a_s @ a_s.t(), p=2, dim=1)
    g_t = F.normalize(a_t @ a_t.t(), p=2, dim=1)
    return ((g_s - g_t) ** 2).mean()


def rkd_distance_loss(f_s, f_t):
    """RKD distance-wise loss (Park et al., CVPR 2019), as in the authors' code.

        d[i,j] = sqrt(clamp(|x_i|^2 + |x_j|^2 - 2 <x_i, x_j>, min=1e-12)),  d[i,i] := 0
        d~     = d / mean{ d[i,j] : d[i,j] > 0 }
        loss   = (1/B^2) * sum_{i,j} smooth_l1(d~_s[i,j] - d~_t[i,j]),   beta = 1
        smooth_l1(z) = 0.5 z^2 if |z| < 1 else |z| - 0.5
    """
    batch_size = f_s.shape[0]
    x_s = f_s.reshape(batch_size, -1)
    x_t = f_t.reshape(batch_size, -1)
    eye = torch.eye(batch_size, dtype=torch.bool, device=f_s.device)

    sq_s = (x_s * x_s).sum(dim=1)
    d_s = (sq_s.unsqueeze(1) + sq_s.unsqueeze(0) - 2.0 * (x_s @ x_s.t())).clamp(min=1e-12).sqrt()
    d_s = torch.where(eye, torch.zeros_like(d_s), d_s)
    d_s = d_s / d_s[d_s > 0].mean()

    sq_t = (x_t * x_t).sum(dim=1)
    d_t = (sq_t.unsqueeze(1) + sq_t.unsqueeze(0) - 2.0 * (x_t @ x_t.t())).clamp(min=1e-12).sqrt()
    d_t = torch.where(eye, torch.zeros_like(d_t), d_t)
    d_t = d_t / d_t[d_t > 0].mean()

    z = d_s - d_t
    abs_z = z.abs()
    elementwise = torch.where(abs_z < 1.0, 0.5 * z * z, abs_z - 0.5)
    return elementwise.mean()


def rkd_angle_loss(f_s, f_t):
    """RKD angle-wise loss (Park et al., CVPR 2019), as in the authors' code.

        e_ij       = (x_i - x_j) / max(|x_i - x_j|, 1e-12)    (F.normalize; e_ii = 0)
        A[i,j,k]   = <e_ij, e_kj>      for all i, j, k      (B^3 values, vertex j)
        loss       = (1/B^3) * sum_{i,j,k} smooth_l1(A_s[i,j,k] - A_t[i,j,k]),  beta = 1
    """
    batch_size = f_s.shape[0]
    x_s = f_s.reshape(batch_size, -1)
    x_t = f_t.reshape(batch_size, -1)

    # diff[j, i, :] = x_i - x_j  -> e[j, i, :] = e_ij
    e_s = F.normalize(x_s.unsqueeze(0) - x_s.unsqueeze(1), p=2, dim=2)
    e_t = F.normalize(x_t.unsqueeze(0) - x_t.unsqueeze(1), p=2, dim=2)
    # angle[j, i, k] = <e_ij, e_kj>
    a_s = torch.bmm(e_s, e_s.transpose(1, 2))
    a_t = torch.bmm(e_t, e_t.transpose(1, 2))

    z = a_s - a_t
    abs_z = z.abs()
    elementwise = torch.where(abs_z < 1.0, 0.5 * z * z, abs_z - 0.5)
    return elementwise.mean()


def rkd_loss(f_s, f_t):
    """Convenience: returns the pair (rkd_distance_loss, rkd_angle_loss), unweighted."""
    return rkd_distance_loss(f_s, f_t), rkd_angle_loss(f_s, f_t)


def pkt_loss(f_s, f_t, eps=1e-7):
    """Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018).

        X~   = X with rows L2-normalised (F.normalize, dim=1)
        S    = X~ X~^T                     (cosine similarities, B x B)
        S    = (S + 1) / 2
        P    = S / S.sum(dim=1, keepdim=True)      (row-stochastic)
        loss = (1/B^2) * sum_{i,j} P_t[i,j] * log((P_t[i,j] + eps) / (P_s[i,j] + eps))
    """
    batch_size = f_s.shape[0]
    x_s = F.normalize(f_s.reshape(batch_size, -1), p=2, dim=1)
    x_t = F.normalize(f_t.reshape(batch_size, -1), p=2, dim=1)

    s = (x_s @ x_s.t() + 1.0) / 2.0
    s = s / s.sum(dim=1, keepdim=True)

    t = (x_t @ x_t.t() + 1.0) / 2.0
    t = t / t.sum(dim=1, keepdim=True)

    return (t * torch.log((t + eps) / (s + eps))).mean()


def cc_loss(f_s, f_t, gamma=0.4, order=2):
    """Correlation Congruence (Peng et al., ICCV 2019), Gaussian-RBF kernel with
    a truncated Taylor expansion.

        X~   = X with rows L2-normalised (F.normalize, dim=1)
        C    = X~ X~^T                                        (B x B)
        K    = exp(-2 gamma) * sum_{p=0..order} (2 gamma)^p / p! * C^p
               (C^p = ELEMENT-WISE power, C^0 = all ones)
        loss = (1/B^2) * sum_{i,j} (K_s[i,j] - K_t[i,j])^2
    """
    batch_size = f_s.shape[0]
    x_s = F.normalize(f_s.reshape(batch_size, -1), p=2, dim=1)
    x_t = F.normalize(f_t.reshape(batch_size, -1), p=2, dim=1)
    c_s = x_s @ x_s.t()
    c_t = x_t @ x_t.t()

    k_s = torch.zeros_like(c_s)
    k_t = torch.zeros_like(c_t)
    for p in range(order + 1):
        coef = (2.0 * gamma) ** p / math.factorial(p)
        k_s = k_s + coef * (torch.ones_like(c_s) if p == 0 else c_s ** p)
        k_t = k_t + coef * (torch.ones_like(c_t) if p == 0 else c_t ** p)
    k_s = math.exp(-2.0 * gamma) * k_s
    k_t = math.exp(-2.0 * gamma) * k_t

    return ((k_s - k_t) ** 2).mean()
