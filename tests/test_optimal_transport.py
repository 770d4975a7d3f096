"""Log-domain Sinkhorn (OTSeg Appendix A, Algorithm 1): marginals, agreement with the plain
domain, stability at small epsilon, gradients, and prompts taking different pixels."""
import pytest
import torch

from zsmask.modeling.optimal_transport import log_sinkhorn


def plain_sinkhorn(cost, epsilon, iterations):
    """Textbook Sinkhorn-Knopp in the exp domain (the test oracle): uniform marginals, b^0 = 1."""
    kernel = torch.exp(-cost.double() / epsilon)
    mu = torch.full(cost.shape[:-1], 1.0 / cost.shape[-2], dtype=torch.float64)
    nu = torch.full(cost.shape[:-2] + cost.shape[-1:], 1.0 / cost.shape[-1], dtype=torch.float64)
    b = torch.ones_like(nu)
    for _ in range(iterations):
        a = mu / (kernel @ b.unsqueeze(-1)).squeeze(-1)
        b = nu / (kernel.transpose(-1, -2) @ a.unsqueeze(-1)).squeeze(-1)
    return a.unsqueeze(-1) * kernel * b.unsqueeze(-2)


def test_plans_meet_both_marginals():
    torch.manual_seed(0)
    cost = 1 - torch.rand(3, 2, 50, 4)  # (batch, classes, pixels, prompts), C = 1 - S
    result = log_sinkhorn(cost, epsilon=0.1, max_iter=500, tol=1e-6)
    plan = result.plan
    assert plan.shape == cost.shape and plan.dtype == torch.float32
    assert torch.allclose(plan.sum(-1), torch.full((3, 2, 50), 1 / 50), atol=1e-4 / 50)
    assert (plan.sum(-1) - 1 / 50).abs().sum(-1).max() < 1e-4
    assert (plan.sum(-2) - 1 / 4).abs().sum(-1).max() < 1e-4
    assert result.marginal_error <= 1e-6 and result.iterations < 500  # stopped early


def test_log_domain_equals_plain_domain_on_well_conditioned_inputs():
    torch.manual_seed(1)
    cost = torch.rand(4, 30, 5)
    log_plan = log_sinkhorn(cost, epsilon=0.5, max_iter=50, tol=None).plan
    torch.testing.assert_close(log_plan.double(), plain_sinkhorn(cost, 0.5, 50), rtol=1e-4, atol=1e-7)
    # a custom marginal is honoured
    log_mu = torch.log_softmax(torch.randn(30), 0)
    plan = log_sinkhorn(cost[0], 0.5, max_iter=300, tol=1e-7, log_mu=log_mu).plan
    torch.testing.assert_close(plan.sum(-1), log_mu.exp(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("autocast", [False, True])
def test_no_nan_or_inf_at_small_epsilon_with_extreme_scores(autocast):
    torch.manual_seed(2)
    # |C| / eps up to 5,000: exp(-C / eps) overflows (and underflows) float32 in the plain domain
    scores = (torch.randn(2, 64, 3) * 50).clamp(-50, 50)
    assert torch.isinf(torch.exp((scores - 1) / 0.01)).any()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
        result = log_sinkhorn((1 - scores).to(torch.bfloat16 if autocast else torch.float32), epsilon=0.01,
                              max_iter=200)
    assert result.plan.dtype == torch.float32 and torch.isfinite(result.plan).all() and (result.plan >= 0).all()
    assert (result.plan.sum((-1, -2)) - 1).abs().max() < 1e-3
    # scores of 1e4 and -1e4 (|C| / eps = 1e6) still give a finite plan
    scores[0, :5], scores[1, :, 0] = 1e4, -1e4
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
        plan = log_sinkhorn(1 - scores, epsilon=0.01, max_iter=50).plan
    assert torch.isfinite(plan).all()


def test_gradcheck():
    torch.manual_seed(3)
    cost = torch.rand(2, 6, 3, dtype=torch.float64, requires_grad=True)

    def plan_of(c):
        # float32 inside by design: compare the analytical and numerical gradients at fp32 accuracy
        return log_sinkhorn(c, epsilon=0.3, max_iter=20, tol=None).plan.double()

    assert torch.autograd.gradcheck(plan_of, (cost,), eps=1e-3, atol=1e-4, rtol=1e-2)


def test_two_prompts_take_different_pixels():
    """A crafted score map: prompt 0 matches the left half, prompt 1 the right half, with the
    same total score; the plan sends each half to its own prompt."""
    scores = torch.full((16, 2), 0.2)
    scores[:8, 0] = 0.9
    scores[8:, 1] = 0.9
    plan = log_sinkhorn(1 - scores, epsilon=0.05, max_iter=200).plan
    assert (plan[:8, 0] > 5 * plan[:8, 1]).all() and (plan[8:, 1] > 5 * plan[8:, 0]).all()
    # with one prompt much stronger everywhere, the column marginal still splits the pixels
    scores = torch.stack((torch.linspace(0.5, 1.0, 16), torch.linspace(0.4, 0.5, 16)), dim=1)
    plan = log_sinkhorn(1 - scores, epsilon=0.05, max_iter=500).plan
    assert plan.argmax(1).tolist().count(1) >= 4  # a plain argmax of the scores would give prompt 0 everywhere
    assert (scores.argmax(1) == 0).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="epsilon"):
        log_sinkhorn(torch.rand(3, 2), epsilon=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        log_sinkhorn(torch.rand(3, 2), epsilon=0.1, max_iter=0)
    with pytest.raises(ValueError, match=r"\(\.\.\., M, N\)"):
        log_sinkhorn(torch.rand(3), epsilon=0.1)
