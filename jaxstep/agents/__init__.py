"""Flax agents built from spaces, and an optax PPO trainer whose rollouts and updates compile together."""

from jaxstep.agents.config import PPOConfig
from jaxstep.agents.networks import Agent, unroll
from jaxstep.agents.ppo import TrainState, make_train
from jaxstep.agents.returns import gae, vtrace
from jaxstep.agents.train import load_policy, read_metrics, run

__all__ = ["Agent", "PPOConfig", "TrainState", "gae", "load_policy", "make_train", "read_metrics", "run", "unroll",
           "vtrace"]  # fmt: skip
