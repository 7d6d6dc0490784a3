"""One check shared by the preset tests: a composed objective's total and its gradients
with respect to the student's taps equal the reference's."""
import torch


def assert_total_and_student_gradients_match(total, want, student_taps):
    """``total`` (relkd) equals ``want`` (the reference) to float64 tolerance, and so do their
    gradients with respect to every student tap (a tap neither uses has none, or zeros).
    Returns relkd's gradients, in the order of ``student_taps``."""
    torch.testing.assert_close(total, want, rtol=1e-7, atol=1e-9)
    grads = torch.autograd.grad(total, list(student_taps.values()), allow_unused=True, retain_graph=True)
    want_grads = torch.autograd.grad(want, list(student_taps.values()), allow_unused=True)
    for got, exp in zip(grads, want_grads):
        if exp is None:
            assert got is None or torch.count_nonzero(got) == 0
        else:
            torch.testing.assert_close(got, exp, rtol=1e-6, atol=1e-9)
    return grads
