"""Logger set-up: wandb online only with credentials, sweeps grouped, never a prompt."""

from __future__ import annotations

from conftest import compose_train
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import open_dict, read_write

from glimpse.run import build_loggers
from glimpse.utils.wandb_setup import has_wandb_credentials, wandb_mode


def _no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_without_credentials_wandb_is_offline(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    assert not has_wandb_credentials()
    assert wandb_mode() == "offline"


def test_api_key_or_netrc_entry_counts_as_credentials(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "y" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert has_wandb_credentials()


def test_explicit_wandb_mode_wins(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_many_loggers_and_offline_wandb_from_config(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    cfg = compose_train(["logger=many"], tmp_path)
    loggers = build_loggers(cfg.logger)
    kinds = {type(logger).__name__ for logger in loggers}
    assert kinds == {"CSVLogger", "TensorBoardLogger", "WandbLogger"}
    wandb_logger = next(logger for logger in loggers if isinstance(logger, WandbLogger))
    assert wandb_logger._offline is True
    assert wandb_logger._wandb_init.get("group") is None
    assert any(isinstance(logger, CSVLogger) for logger in loggers)


def test_runs_of_one_sweep_share_a_wandb_group(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    sweep_dir = tmp_path / "multiruns" / "2026-01-01_00-00-00_abc123"
    cfg = compose_train(["logger=wandb", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.mode = "MULTIRUN"
    loggers = build_loggers(cfg.logger)
    assert loggers[0]._wandb_init["group"] == "2026-01-01_00-00-00_abc123"
