"""The one-pass probe sweep (fils_model/probe_sweep.py) and the probe trainers built on it."""
from __future__ import annotations

import pytest
import torch

from fils_model.attentive_probe import train_attentive_probe
from fils_model.classifier import VideoClassifier
from fils_model.config import ModelConfig
from fils_model.finetune_config import FinetuneRecipe, HeadConfig
from fils_model.finetune_loss import classification_loss, dense_targets
from fils_model.linear_probe import train_probe
from fils_model.optim import build_optimizer, build_scheduler
from fils_model.probe_sweep import AttentiveHeads, LinearHeads, ProbeSetting, train_probe_sweep

DIM = 16


def _recipe(head: HeadConfig, steps: int = 30, smoothing: float = 0.1, **optim: float) -> FinetuneRecipe:
    return FinetuneRecipe(head=head, mode="linear_probe", total_steps=steps, warmup_steps=steps // 10,
                          global_batch_size=16, seed=3, model_ema=False,
                          mix={"mixup": 0, "cutmix": 0, "label_smoothing": smoothing},
                          optim={"base_lr": 0.5, "weight_decay": 0.05, **optim})


def _random_targets(head: HeadConfig, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {f"target_{name}": torch.randint(0, 2, (n, width), generator=generator) if head.task == "multi_label"
            else torch.randint(0, width, (n,), generator=generator) for name, width in head.outputs().items()}


def _reference_train_probe(model: VideoClassifier, data: dict[str, torch.Tensor], recipe: FinetuneRecipe) -> None:
    """train_probe as it was before the sweep: the plain loop it must still match bit for bit."""
    model.freeze_encoder()
    features = data["features"]
    head = torch.nn.ModuleDict({"fc_norm": model.fc_norm, "heads": model.heads})
    optimizer = build_optimizer(head, recipe.optim, recipe.global_batch_size)
    scheduler = build_scheduler(optimizer, recipe.optim, recipe.total_steps, recipe.warmup_steps,
                                recipe.global_batch_size)
    generator = torch.Generator().manual_seed(recipe.seed)
    batch = min(recipe.global_batch_size, len(features))
    head.train()
    for step in range(recipe.total_steps):
        scheduler.step_update(step)
        index = torch.randperm(len(features), generator=generator)[:batch]
        targets = dense_targets({k: v[index] for k, v in data.items() if k != "features"}, recipe.head)
        loss = classification_loss(model.classify(features[index]), targets, recipe.head, recipe.mix.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("head", [HeadConfig(num_classes=5),
                                  HeadConfig(task="epic_verb_noun", num_verbs=4, num_nouns=6),
                                  HeadConfig(task="multi_label", num_classes=7)], ids=lambda h: h.task)
def test_train_probe_matches_the_plain_loop(head: HeadConfig) -> None:
    cfg = ModelConfig(size="tiny", embed_dim=DIM, img_size=32, num_frames=4)
    recipe = _recipe(head, smoothing=0.0 if head.task == "multi_label" else 0.1)
    generator = torch.Generator().manual_seed(2)
    data = {"features": torch.randn(50, DIM, generator=generator), **_random_targets(head, 50, generator)}
    models = []
    for train in (train_probe, _reference_train_probe):
        torch.manual_seed(1)
        models.append(VideoClassifier(cfg, head))
        train(models[-1], data, recipe)
    trained, reference = (m.state_dict() for m in models)
    assert trained.keys() == reference.keys()
    assert all(torch.equal(trained[k], reference[k]) for k in trained)
    assert not torch.equal(trained["fc_norm.weight"], torch.ones(DIM))  # it did train


def _clusters(classes: int, n: int, generator: torch.Generator, spread: float = 4.0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features around ``classes`` far-apart means (linearly separable up to a little noise) and their labels."""
    means = torch.randn(classes, DIM, generator=generator) * spread
    labels = torch.randint(0, classes, (n,), generator=generator)
    return means[labels] + torch.randn(n, DIM, generator=generator), labels


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def test_linear_heads_have_the_classifier_head_layout_and_init() -> None:
    head = HeadConfig(task="epic_verb_noun", num_verbs=4, num_nouns=6)
    classifier = VideoClassifier(ModelConfig(size="tiny", embed_dim=DIM, img_size=32, num_frames=4), head)
    torch.manual_seed(0)
    probe = LinearHeads(DIM, head)
    classifier_heads = {k: v for k, v in classifier.state_dict().items() if not k.startswith("encoder.")}
    assert probe.state_dict().keys() == classifier_heads.keys()
    std = float(probe.heads["noun"].weight.detach().std())
    assert 0.5 < std / (0.02 * head.init_scale) < 1.5  # trunc-normal(0.02) x init_scale
    assert not probe.heads["noun"].bias.any()
    logits = probe(torch.randn(3, DIM))
    assert {k: v.shape for k, v in logits.items()} == {"verb": (3, 4), "noun": (3, 6)}


@pytest.mark.parametrize("probe_class", [LinearHeads, AttentiveHeads], ids=["linear", "attentive"])
def test_each_setting_of_a_sweep_equals_training_it_alone(probe_class: type[torch.nn.Module]) -> None:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(40, 3, DIM, generator=generator)
    inputs = tokens.mean(1) if probe_class is LinearHeads else tokens
    targets = {"target_label": torch.randint(0, 3, (40,), generator=generator)}
    recipe = _recipe(HeadConfig(num_classes=3), steps=20)

    def make_probe() -> torch.nn.Module:
        return probe_class(DIM, recipe.head)

    settings = [ProbeSetting(0.5, 0.05), ProbeSetting(0.05, 0.0), ProbeSetting(2.0, 0.3)]
    swept = train_probe_sweep(make_probe, inputs, targets, recipe, settings)
    assert len(swept) == 3 and not any(probe.training for probe in swept)
    for setting, probe in zip(settings, swept):
        (alone,) = train_probe_sweep(make_probe, inputs, targets, recipe, [setting])
        state, alone_state = probe.state_dict(), alone.state_dict()
        assert all(torch.equal(state[k], alone_state[k]) for k in state), setting.label
    first, second = (p.state_dict() for p in swept[:2])
    assert not all(torch.equal(first[k], second[k]) for k in first)  # the settings did differ


def test_a_sweep_separates_good_settings_from_a_too_small_lr() -> None:
    generator = torch.Generator().manual_seed(1)
    features, labels = _clusters(4, 400, generator)
    train, held_out = slice(0, 200), slice(200, None)
    recipe = _recipe(HeadConfig(num_classes=4), steps=100, smoothing=0.0, min_lr=0.0, warmup_start_lr=0.0)
    settings = [ProbeSetting(1e-9, 0.05), ProbeSetting(0.1, 0.05), ProbeSetting(1.0, 0.0)]
    probes = train_probe_sweep(lambda: LinearHeads(DIM, recipe.head), features[train], {"target_label": labels[train]},
                               recipe, settings)
    with torch.no_grad():
        accuracy = {setting.label: _accuracy(probe(features[held_out])["label"], labels[held_out])
                    for setting, probe in zip(settings, probes)}
    assert list(accuracy) == ["lr=1e-09,wd=0.05", "lr=0.1,wd=0.05", "lr=1,wd=0"]
    assert accuracy["lr=0.1,wd=0.05"] > 0.95 and accuracy["lr=1,wd=0"] > 0.95, accuracy
    assert accuracy["lr=1e-09,wd=0.05"] < 0.6, accuracy


@pytest.mark.parametrize("head", [HeadConfig(task="epic_verb_noun", num_verbs=4, num_nouns=6),
                                  HeadConfig(task="multi_label", num_classes=5)], ids=lambda h: h.task)
def test_every_head_of_a_task_trains(head: HeadConfig) -> None:
    generator = torch.Generator().manual_seed(2)
    n = 200
    if head.task == "multi_label":
        features = torch.randn(n, DIM, generator=generator)
        targets = {"target_label": (features @ torch.randn(DIM, 5, generator=generator) > 0).long()}
    else:
        verbs, verb = _clusters(4, n, generator, spread=2.0)
        nouns, noun = _clusters(6, n, generator, spread=2.0)
        features, targets = verbs + nouns, {"target_verb": verb, "target_noun": noun}
    recipe = _recipe(head, steps=100, smoothing=0.0)

    def loss(probe: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(classification_loss(probe(features), dense_targets(targets, head), head, 0.0))

    torch.manual_seed(recipe.seed)
    before = loss(LinearHeads(DIM, head))
    (probe,) = train_probe_sweep(lambda: LinearHeads(DIM, head), features, targets, recipe, [ProbeSetting(0.5, 0.05)])
    assert loss(probe) < 0.5 * before, (before, loss(probe))


def test_the_attentive_probe_finds_the_one_token_that_carries_the_class() -> None:
    generator = torch.Generator().manual_seed(3)
    n, tokens_per_clip, classes = 400, 8, 4
    signal, labels = _clusters(classes, n, generator)
    tokens = torch.randn(n, tokens_per_clip, DIM, generator=generator)
    where = torch.randint(0, tokens_per_clip, (n,), generator=generator)
    tokens[torch.arange(n), where] = signal  # the class is visible in one token, a different one per clip
    train, held_out = slice(0, 300), slice(300, None)
    recipe = _recipe(HeadConfig(num_classes=classes), steps=150, smoothing=0.0, min_lr=0.0)
    probe = train_attentive_probe(tokens[train], {"target_label": labels[train]}, recipe)
    assert isinstance(probe, AttentiveHeads) and not probe.training
    with torch.no_grad():
        accuracy = _accuracy(probe(tokens[held_out])["label"], labels[held_out])
    assert accuracy > 1 / classes + 0.4, accuracy


def test_errors_say_what_to_do() -> None:
    recipe = _recipe(HeadConfig(num_classes=3))
    probe, features = (lambda: LinearHeads(DIM, recipe.head)), torch.randn(10, DIM)
    labels = {"target_label": torch.zeros(10, dtype=torch.long)}
    with pytest.raises(ValueError, match="at least one ProbeSetting"):
        train_probe_sweep(probe, features, labels, recipe, [])
    setting = [ProbeSetting(0.1, 0.0)]
    with pytest.raises(ValueError, match="inputs is empty"):
        train_probe_sweep(probe, features[:0], {"target_label": labels["target_label"][:0]}, recipe, setting)
    with pytest.raises(ValueError, match=r"'target_label'\] has 9 rows but inputs has 10; give one target row"):
        train_probe_sweep(probe, features, {"target_label": labels["target_label"][:9]}, recipe, setting)
    with pytest.raises(ValueError, match="targets lack 'target_label'"):
        train_probe_sweep(probe, features, {"target_verb": labels["target_label"]}, recipe, setting)
    with pytest.raises(ValueError, match="lr=1e-09,wd=0 does not fit recipe.optim .*min_lr"):
        train_probe_sweep(probe, features, labels, recipe, [ProbeSetting(1e-9, 0.0)])
