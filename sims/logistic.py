"""The logistic toy world of the NPO paper (Sec. 4, App. D): data, reference and retrained models, unlearning.

Data (alpha in {0, 1} sets how far apart the two covariate distributions sit):
    forget  x ~ N(mu_f, I_d),  P(y=1|x) = sigma((x - mu_f)^T theta_f + 1)
    retain  x ~ N(mu_r, I_d),  P(y=1|x) = sigma((x - mu_r)^T theta_r - 1)
    theta_f = -theta_r = 1_d / sqrt(d),   mu_f = -mu_r = alpha 1_d
so forget labels are mostly 1 and retain labels mostly 0. Fresh evaluation covariates are drawn from both.
The IDK target (and DPO's preferred label) is y_alt ~ Bern(0.5), fixed per draw.

Models are members of one ``unlearn.models.logistic.LogisticHead`` on fixed random ReLU features (a "world"
is one draw of data and features, already mapped through phi). pi_ref is trained on forget + retain, pi_retr
on retain only, by full-batch gradient descent on the mean NLL from theta = 0. Unlearning runs (``Run``: a
method, its hyperparameters and a learning rate) go through the shared loop side by side, every run on every
world, each with pi_ref's log-probs cached once: the reference model is never evaluated during training.

Every sample is a one-token sequence (the head's logits are (M, B, 1, 2)), so logits become log-probs and KLs
through the core's path, ``unlearn.ensemble.member_logprobs`` / ``member_kl`` (``unlearn.logprobs``), and
losses through ``unlearn.ensemble.member_losses`` (``unlearn.objectives``). ``unlearning_losses`` below is
the logistic counterpart of ``unlearn.losses.unlearning_losses`` (see its docstring for why it stays).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn import cache
from unlearn.ensemble import member_kl, member_logprobs, member_losses
from unlearn.models.logistic import LogisticHead, random_relu_features
from unlearn.objectives import MethodParams, SequenceStats, get_method
from unlearn.train import History, TrainConfig, train

EVAL_METRICS = ("forget_dist", "retain_dist", "forget_kl")


@dataclass(frozen=True)
class LogisticData:
    """One draw of the data; x_* are covariates (n, d) or, after ``featurize``, features (n, p).
    ``stack`` gives each field a leading world axis."""

    x_forget: torch.Tensor
    y_forget: torch.Tensor  # long
    y_alt: torch.Tensor  # long, Bern(0.5): IDK target / DPO winner
    x_retain: torch.Tensor
    y_retain: torch.Tensor  # long
    x_eval_forget: torch.Tensor
    x_eval_retain: torch.Tensor

    def featurize(self, W: torch.Tensor) -> LogisticData:
        """The same data with every covariate replaced by its random features relu(W x)."""
        fields = vars(self).items()
        return LogisticData(**{k: random_relu_features(v, W) if k.startswith("x_") else v for k, v in fields})

    def to(self, device) -> LogisticData:
        return LogisticData(**{k: v.to(device) for k, v in vars(self).items()})

    @staticmethod
    def stack(worlds: list[LogisticData]) -> LogisticData:
        """Every field becomes (W, ...)."""
        return LogisticData(**{k: torch.stack([getattr(w, k) for w in worlds]) for k in vars(worlds[0])})


def sample_data(alpha: float, d: int, n_forget: int, n_retain: int, n_eval: int, g: torch.Generator,
                dtype=torch.float64) -> LogisticData:
    """One draw of the NPO synthetic data set (module docstring), from generator ``g``."""
    ones = torch.ones(d, dtype=dtype)
    theta_f, mu_f = ones / d**0.5, alpha * ones

    def covariates(n, mu):
        return mu + torch.randn(n, d, generator=g, dtype=dtype)

    def labels(x, mu, theta, shift):
        return torch.bernoulli(torch.sigmoid((x - mu) @ theta + shift), generator=g).long()

    x_r = covariates(n_retain, -mu_f)
    y_r = labels(x_r, -mu_f, -theta_f, -1.0)
    x_f = covariates(n_forget, mu_f)
    y_f = labels(x_f, mu_f, theta_f, 1.0)
    y_alt = torch.bernoulli(torch.full((n_forget,), 0.5, dtype=dtype), generator=g).long()
    return LogisticData(x_f, y_f, y_alt, x_r, y_r, covariates(n_eval, mu_f), covariates(n_eval, -mu_f))


def member_labels(y: torch.Tensor, members: int) -> torch.Tensor:
    """Each world's labels y (W, B) as its members' one-token responses: (M, B, 1), member m = w * K + k."""
    return y.repeat_interleave(members // y.shape[0], dim=0).unsqueeze(-1)


def one_token_mask(y: torch.Tensor) -> torch.Tensor:
    """The response mask of one-token sequences, shared by all members: (B, 1) of True for labels (W, B)."""
    return torch.ones(y.shape[-1], 1, dtype=torch.bool, device=y.device)


def fit(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, lr: float, steps: int, name: str = "fit",
        progress: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch GD from theta = 0 on each member's weighted mean NLL, sum_b weight[m,b] nll[m,b] / B.

    x (W, B, p) and y (W, B) per world, weight (W*K, B) per member: weight B/n on the n samples a member trains
    on and 0 elsewhere gives the plain mean NLL over those samples. Returns theta (W, K, p) and each member's
    final gradient norm (W*K,) (the paper's code requires < 1e-2).
    """
    model = LogisticHead(x.shape[-1], x.shape[0], weight.shape[0] // x.shape[0], dtype=x.dtype).to(x.device)
    labels, mask = member_labels(y, weight.shape[0]), one_token_mask(y)

    def nll(m, _batch):
        return {"nll": -weight * member_logprobs(m(x).logits, labels, mask).logp}

    train(model, nll, lambda step: [None],
          TrainConfig(steps=steps, lr=lr, precision="float64", device=str(x.device), progress=progress, name=name))
    model.zero_grad()
    nll(model, None)["nll"].mean(-1).sum().backward()
    return model.theta.detach(), model.theta.grad.flatten(0, 1).norm(dim=-1)


def pretrain(worlds: list[LogisticData], lr: float, steps: int, progress: bool | None = None):
    """pi_ref (forget + retain) and pi_retr (retain only) of every world, trained side by side.

    Returns (theta_ref (W, p), theta_retr (W, p), grad_norm_ref (W,), grad_norm_retr (W,)).
    """
    data = LogisticData.stack(worlds)
    x, y = torch.cat([data.x_forget, data.x_retain], 1), torch.cat([data.y_forget, data.y_retain], 1)
    n_f, n_all = data.y_forget.shape[1], x.shape[1]
    weight = torch.ones(len(worlds), 2, n_all, dtype=x.dtype, device=x.device)
    weight[:, 1, :n_f] = 0.0  # member 1 of each world: retain only
    weight[:, 1, n_f:] = n_all / (n_all - n_f)
    theta, grad_norm = fit(x, y, weight.flatten(0, 1), lr, steps, f"pretrain pi_ref, pi_retr x{len(worlds)}",
                           progress)
    grad_norm = grad_norm.view(len(worlds), 2)
    return theta[:, 0], theta[:, 1], grad_norm[:, 0], grad_norm[:, 1]


def pretrain_cached(worlds: list[LogisticData], keys: list[dict], lr: float, steps: int,
                    progress: bool | None = None):
    """``pretrain`` through the model cache (``unlearn.cache``): worlds whose key (the config that generated
    the world, plus lr, steps and the device type: CPU and CUDA kernels round differently) is stored are loaded,
    the others trained side by side and stored."""
    device = worlds[0].x_forget.device
    keys = [{**key, "lr": lr, "steps": steps, "device": device.type} for key in keys]
    entries = [cache.load("logistic-pretrain", key) for key in keys]
    missing = [i for i, entry in enumerate(entries) if entry is None]
    if missing:
        trained = pretrain([worlds[i] for i in missing], lr, steps, progress)
        for j, i in enumerate(missing):
            entries[i] = dict(zip(("theta_ref", "theta_retr", "grad_norm_ref", "grad_norm_retr"),
                                  (t[j] for t in trained), strict=True))
            cache.store("logistic-pretrain", keys[i], entries[i])
    return tuple(torch.stack([e[name] for e in entries]).to(device)
                 for name in ("theta_ref", "theta_retr", "grad_norm_ref", "grad_norm_retr"))


@dataclass(frozen=True)
class Run:
    """One unlearning run: ``method`` (a METHODS name) with ``params`` at learning rate ``lr``."""

    label: str
    method: str
    params: MethodParams
    lr: float


def _head(theta: torch.Tensor, members_per_world: int) -> LogisticHead:
    """A head whose K members per world all start at that world's theta (W, p)."""
    head = LogisticHead(theta.shape[-1], theta.shape[0], members_per_world, dtype=theta.dtype).to(theta.device)
    head.theta.data.copy_(theta.unsqueeze(1).expand_as(head.theta))
    return head


def unlearning_losses(runs: list[Run], data: LogisticData, ref: LogisticHead):
    """losses_fn for ``unlearn.train``: per-sequence forget and retain losses of every run on every world.

    ``data`` is stacked per world and ``ref`` has one member per run and world, all at that world's pi_ref;
    member m = world * len(runs) + run. Statistics are computed for all members at once and only when some
    run's method reads them (``Method.needs``); pi_ref enters through cached log-probs and cached retain
    logits. ``unlearn.ensemble.member_losses`` evaluates each method's terms once for all of its members,
    each with its own hyperparameters, so the cost per step does not grow with a Python loop over members.

    The steps are those of ``unlearn.losses.unlearning_losses`` (logits -> ``member_logprobs`` /
    ``member_kl`` -> ``SequenceStats`` -> ``member_losses``); that function cannot serve this model as it is:
    it refuses DPO (no reference log-probs of alternative responses, ``alt_logp_ref``), runs a second forward
    for the alternative responses (here y_alt labels the same inputs, so alt_logp reads the forget logits:
    one forward, and gradients summed in the logits rather than in theta) and feeds an ensemble per-member
    inputs (M, b, ...) where the head reads one input per world (W, B, p) for its K members.
    """
    methods = [get_method(run.method) for run in runs]
    with_alt = any("alt_logp" in m.needs["forget"] for m in methods)
    with_retain = any(m.retain is not None for m in methods)
    with_kl = any("kl" in m.needs["retain"] for m in methods)
    worlds = data.x_forget.shape[0]
    members = worlds * len(runs)
    names, params = [run.method for run in runs] * worlds, [run.params for run in runs] * worlds
    y_f, y_alt, y_r = (member_labels(y, members) for y in (data.y_forget, data.y_alt, data.y_retain))
    mask_f, mask_r = one_token_mask(data.y_forget), one_token_mask(data.y_retain)
    with torch.no_grad():
        ref_logits_f, ref_logits_r = ref(data.x_forget).logits, ref(data.x_retain).logits
        ref_logp = member_logprobs(ref_logits_f, y_f, mask_f).logp
        ref_alt_logp = member_logprobs(ref_logits_f, y_alt, mask_f).logp

    def losses_fn(model, _batch):
        logits_f = model(data.x_forget).logits
        f = member_logprobs(logits_f, y_f, mask_f)
        alt_f = member_logprobs(logits_f, y_alt, mask_f).logp if with_alt else None
        forget = SequenceStats(f.logp, f.n_tokens, ref_logp, alt_f, ref_alt_logp if with_alt else None)
        retain = None
        if with_retain:
            logits_r = model(data.x_retain).logits
            kl_r = member_kl(logits_r, ref_logits_r, mask_r) if with_kl else None
            r = member_logprobs(logits_r, y_r, mask_r)
            retain = SequenceStats(r.logp, r.n_tokens, kl=kl_r)
        return member_losses(names, params, forget, retain)

    return losses_fn


def evaluator(data: LogisticData, ref: LogisticHead, retr: LogisticHead):
    """The NPO paper's metrics on fresh evaluation covariates, one value per member (code names
    forget_quality, retain_quality, forget_diff):

        forget_dist = E_{x~forget} KL(pi_retr || pi_theta),  retain_dist = E_{x~retain} KL(pi_retr || pi_theta),
        forget_kl   = E_{x~forget} KL(pi_ref || pi_theta)   (App. B).
    """
    xf, xr = data.x_eval_forget, data.x_eval_retain
    mask_f = torch.ones(xf.shape[1], 1, dtype=torch.bool, device=xf.device)
    mask_r = torch.ones(xr.shape[1], 1, dtype=torch.bool, device=xr.device)
    with torch.no_grad():
        ref_f, retr_f, retr_r = ref(xf).logits, retr(xf).logits, retr(xr).logits

    def evaluate(model, step):
        logits_f = model(xf).logits
        return {
            "forget_dist": member_kl(logits_f, retr_f, mask_f).mean(-1),
            "retain_dist": member_kl(model(xr).logits, retr_r, mask_r).mean(-1),
            "forget_kl": member_kl(logits_f, ref_f, mask_f).mean(-1),
        }

    return evaluate


def unlearn(runs: list[Run], worlds: list[LogisticData], theta_ref: torch.Tensor, theta_retr: torch.Tensor,
            steps: int, eval_every: int, progress: bool | None = None, name: str = "unlearn",
            eval_at: tuple[int, ...] = (), evaluate=None, optimizer: str = TrainConfig.optimizer,
            adam_betas: tuple[float, float] = TrainConfig.adam_betas,
            adam_eps: float = TrainConfig.adam_eps) -> History:
    """Train every run on every world from that world's pi_ref, side by side; metrics every ``eval_every``.

    The History's evals hold one value per member, member m = world * len(runs) + run. Each member's
    trajectory equals the same run trained alone (tests/test_logistic.py): members share no parameters,
    and each has its own learning rate. ``eval_at`` adds evaluation steps (e.g. a log-spaced grid);
    ``evaluate`` (model, step) -> {name: one value per member} replaces the NPO paper's metrics (``evaluator``).
    ``optimizer``, ``adam_betas``, ``adam_eps``: ``unlearn.train.TrainConfig``'s (default: gradient descent;
    ``UnlearningOptimizer.train_options`` gives them from a config).
    """
    k = len(runs)
    data = LogisticData.stack(worlds)
    ref, retr, model = _head(theta_ref, k), _head(theta_retr, k), _head(theta_ref, k)
    lr = torch.tensor([run.lr for run in runs], dtype=theta_ref.dtype).repeat(len(worlds), 1).unsqueeze(-1)
    cfg = TrainConfig(steps=steps, lr=1.0, optimizer=optimizer, adam_betas=adam_betas, adam_eps=adam_eps,
                      eval_every=eval_every, eval_at=tuple(eval_at), precision="float64",
                      device=str(theta_ref.device), progress=progress, name=name)
    return train(model, unlearning_losses(runs, data, ref), lambda step: [None], cfg,
                 evaluate=evaluate or evaluator(data, ref, retr), lr_scale={"theta": lr})
