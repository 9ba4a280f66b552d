"""BN Embeddings (issue 13): the domain weights, the choice of a domain's branch for a sample of
that domain, the mixture against a direct computation, and the validation-corruptions label."""

from __future__ import annotations

import torch
from torch import nn

from metabn_bench.methods import Batch, build_method
from metabn_bench.methods.bn_embeddings import BNEmbeddings
from metabn_bench.models.domain_bn import DomainBN, DomainMixture, domain_layers, domain_weights
from tests.helpers import tiny_train_config


def build(**hparams: object) -> tuple[BNEmbeddings, DomainMixture]:
    cfg = tiny_train_config(method="bn_embeddings", hparams=hparams)
    torch.manual_seed(0)
    method = build_method(cfg, 10, torch.device("cpu"))
    model = method.build_model()
    assert isinstance(method, BNEmbeddings) and isinstance(model, DomainMixture)
    return method, model


def test_domain_weights_are_normalised_inverse_distances() -> None:
    distances = torch.tensor([[1.0, 2.0, 4.0], [3.0, 3.0, 3.0], [1e-9, 5.0, 5.0]])
    weights = domain_weights(distances)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(weights[0], torch.tensor([4.0, 2.0, 1.0]) / 7)
    torch.testing.assert_close(weights[1], torch.full((3,), 1 / 3))
    assert weights[2, 0] > 0.999  # a sample on a domain's embedding takes that branch


def test_layer_distance_is_the_wasserstein_distance_to_the_route_domain() -> None:
    layer = DomainBN(4, domains=3).double().eval()
    means, stds = [0.0, 3.0, -2.0], [1.0, 2.0, 0.5]
    for bn, m, s in zip(layer.bns, means, stds):
        bn.running_mean.fill_(m)
        bn.running_var.fill_(s * s)
    layer.freeze_embeddings()
    torch.manual_seed(0)
    x = torch.randn(5, 4, 32, 32, dtype=torch.float64) * 2.0 + 3.0  # drawn from domain 1
    distances = []
    for route in range(3):
        layer.route = route
        layer(x)
        distances.append(layer.distance)
    mu, sd = x.mean(dim=(2, 3)), x.var(dim=(2, 3), unbiased=False).sqrt()
    expected = ((mu - means[2]) ** 2 + (sd - stds[2]) ** 2).sum(1).sqrt()
    torch.testing.assert_close(distances[2], expected)
    weights = domain_weights(torch.stack(distances, dim=1))
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(5, dtype=torch.float64))
    assert (weights.argmax(dim=1) == 1).all() and (weights[:, 1] > 0.8).all()


def test_a_sample_of_a_domain_picks_that_domains_branch() -> None:
    """Population statistics from three distinct image distributions (one per domain): test
    images drawn from the second one are weighted to its branch."""
    method, model = build()
    for bn in (bn for layer in domain_layers(model) for bn in layer.bns):
        bn.momentum = 1.0  # the running statistics become the one batch's
    g = torch.Generator().manual_seed(0)

    def domain(d: int, n: int) -> torch.Tensor:
        x = torch.rand(n, 3, 8, 8, generator=g)
        return [x, 0.8 + 0.2 * x, 0.25 * x][d]

    model.train()
    for layer in domain_layers(model):
        layer.chunks = 3
    with torch.no_grad():
        model(method.normalize(torch.cat([domain(d, 16) for d in range(3)])))
    method.prepare_eval(model)
    with torch.no_grad():
        model(method.normalize(domain(1, 8)))
    weights = model.last_weights
    assert weights is not None
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(8))
    assert (weights.argmax(dim=1) == 1).all()


def test_prediction_is_the_weighted_mixture_of_the_branches() -> None:
    method, model = build()
    model.train()
    method.training_step(model, method.batch_transform(
        Batch(torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,)))))
    method.prepare_eval(model)
    x = method.normalize(torch.rand(6, 3, 16, 16))
    with torch.no_grad():
        out = model(x)
        probs, distances = [], []
        for d in range(3):
            for layer in domain_layers(model):
                layer.route = d
            probs.append(torch.softmax(model.net(x), dim=1))
            distances.append(sum(layer.distance for layer in domain_layers(model)))
    inverse = 1 / torch.stack(distances, dim=1)
    weights = inverse / inverse.sum(dim=1, keepdim=True)
    expected = (weights.unsqueeze(-1) * torch.stack(probs, dim=1)).sum(dim=1)
    torch.testing.assert_close(out.exp(), expected, atol=1e-6, rtol=1e-5)


def test_training_uses_one_view_per_domain_and_the_mixture_loss() -> None:
    method, model = build()
    model.train()
    batch = method.batch_transform(Batch(torch.rand(4, 3, 16, 16), torch.randint(0, 10, (4,))))
    assert batch.extra["views"].shape == (12, 3, 16, 16)
    torch.testing.assert_close(batch.extra["views"][:4], batch.x)  # the clean domain
    out = method.training_step(model, batch)
    assert torch.isfinite(out.loss) and out.logits is not None and out.logits.shape == (4, 10)
    assert 0.0 < out.logs["own_domain_weight"] < 1.0
    assert all(layer.chunks is None for layer in domain_layers(model))
    assert method.domain_names() == ["clean", "geometric", "tonal"]
    inner = {id(bn) for layer in domain_layers(model) for bn in layer.bns}
    assert all(id(m) in inner for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_validation_corruption_domains_are_declared_in_result_rows() -> None:
    from metabn_bench.evaluation.subject import method_fields

    cfg = tiny_train_config(method="bn_embeddings", hparams={"domains": "validation_corruptions"})
    method = build_method(cfg, 10, torch.device("cpu"))
    assert isinstance(method, BNEmbeddings)
    names = method.domain_names()
    assert names[0] == "clean" and 1 < len(names) <= 5 and "gaussian_noise" not in names
    assert method_fields(cfg) == {"method": "bn_embeddings[validation_corruptions]",
                                  "trained_on": "validation corruptions"}
    assert method_fields(tiny_train_config(method="bn_embeddings")) == {"method": "bn_embeddings"}
