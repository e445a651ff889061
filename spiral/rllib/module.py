"""RLModules: the SPIRAL policy for env runners and learners, the discriminator for learners only."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import TargetNetworkAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.apis.target_network_api import TARGET_NETWORK_ACTION_DIST_INPUTS
from ray.rllib.core.rl_module.torch import TorchRLModule

from spiral.agent import load_weights
from spiral.discriminator import Discriminator, to_input
from spiral.network_config import NetworkConfig
from spiral.policy import PolicyNetwork

DISCRIMINATOR_ID = "discriminator"


class SpiralPolicyModule(TorchRLModule, ValueFunctionAPI, TargetNetworkAPI):
    """``PolicyNetwork`` behind RLlib's module API.

    Exploration samples the autoregressive action itself and returns actions and their log-probs,
    so RLlib does not sample. Training computes the logits by teacher forcing on the stored
    actions: RLlib's ``TorchMultiCategorical`` over them then gives the exact autoregressive
    log-probability (the one sampled with) and per-head entropies.

    ``model_config`` keys: ``action_names``, ``action_nvec``, ``grid_size``, ``conditional``,
    ``network`` (a ``NetworkConfig`` as a dict) and ``precision`` (the learner's, ``training.precision``;
    sampling is float32); ``init_from``, if set, is an agent's
    ``policy.pt`` (a plain ``state_dict``: ``spiral.agent``) whose weights the network starts
    from, on learners and env runners alike (a restored checkpoint replaces them afterwards). With
    ``anchor`` too, a frozen copy of those weights, ``anchor_net``, stays beside the network for the
    learner's KL penalty (``training.anchor_kl``). The target network (a slowly updated copy of the
    whole network) is what APPO needs; IMPALA never makes one.
    """

    def setup(self) -> None:
        config = self.model_config
        self.net = PolicyNetwork(
            tuple(config["action_names"]), tuple(config["action_nvec"]), config["grid_size"],
            config["conditional"], NetworkConfig(**config.get("network", {})),
        )
        if config.get("init_from"):
            # torch.load(weights_only=True): plain tensors or a ValueError; every key must fit.
            self.net.load_state_dict(load_weights(Path(config["init_from"])), strict=True)
            if config.get("anchor"):
                self.anchor_net = copy.deepcopy(self.net).requires_grad_(False)

    def get_initial_state(self) -> dict[str, np.ndarray]:
        hidden = self.net.config.hidden
        return {"h": np.zeros(hidden, np.float32), "c": np.zeros(hidden, np.float32)}

    def _features(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        state = batch[Columns.STATE_IN]
        features, (h, c) = self.net.features(batch[Columns.OBS], (state["h"], state["c"]))
        return features, {"h": h, "c": c}

    def _act(self, batch: dict[str, Any], greedy: bool) -> dict[str, Any]:
        # Without gradients, as RLlib's own ``_forward_exploration`` runs (which these overrides replace):
        # the env runners' steps are data for the learner, never differentiated, so recording the
        # autograd graph of every acting pass was wasted work. Actions and their log-probabilities, not
        # the logits behind them: whatever a module returns, the runner stores in every step of its
        # episodes and ships to the learner, which recomputes the logits by teacher forcing anyway
        # (V-trace needs only the behaviour log-probabilities).
        with torch.no_grad():
            features, state_out = self._features(batch)
            actions, logp, _ = self.net.sample(features, greedy=greedy)
        return {Columns.ACTIONS: actions, Columns.ACTION_LOGP: logp, Columns.STATE_OUT: state_out}

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._act(batch, greedy=True)

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._act(batch, greedy=False)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        logits, features, (h, c) = self._training_pass(self.net, batch)
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: features, Columns.STATE_OUT: {"h": h, "c": c}}

    def _training_pass(self, net: PolicyNetwork, batch: dict[str, Any]
                       ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``net``'s teacher-forced pass over the batch in the learner's precision (``training.precision``)."""
        state = batch[Columns.STATE_IN]
        return net.training_pass(batch[Columns.OBS], (state["h"], state["c"]), batch[Columns.ACTIONS],
                                 self.model_config.get("precision", "float32"))

    def anchor_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """The frozen starting policy's logits for the batch's actions (teacher forced), without gradients,
        rounded as the policy's own are (so that the KL to it is 0 while the weights are equal)."""
        with torch.no_grad():
            return self._training_pass(self.anchor_net, batch)[0]

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        if embeddings is None:
            embeddings, _ = self._features(batch)
        return self.net.value(embeddings)

    def make_target_networks(self) -> None:
        self.target_net = make_target_network(self.net)

    def get_target_network_pairs(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        return [(self.net, self.target_net)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: self._training_pass(self.target_net, batch)[0]}

    def _distribution_class(self):
        return TorchMultiCategorical.get_partial_dist_cls(input_lens=list(self.net.nvec))

    def get_train_action_dist_cls(self):
        return self._distribution_class()

    def get_exploration_action_dist_cls(self):
        return self._distribution_class()

    def get_inference_action_dist_cls(self):
        return self._distribution_class()


class DiscriminatorModule(TorchRLModule):
    """The discriminator as a learner-only module: checkpointed, placed and wrapped with the policy.

    ``model_config`` keys are ``Discriminator``'s arguments (size, width, conditional,
    spectral_norm). The learner calls ``net`` directly; ``_forward`` scores ``batch["canvas"]``
    (uint8 NHWC, with ``batch["target"]`` in conditional mode) for anyone else.
    """

    def setup(self) -> None:
        # Algorithms merge their own defaults (e.g. APPO's vf_share_layers) into model_config.
        arguments = ("in_channels", "size", "width", "conditional", "spectral_norm")
        self.net = Discriminator(**{key: self.model_config[key] for key in arguments if key in self.model_config})

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        target = batch.get("target")
        return {"scores": self.net(to_input(batch["canvas"]), None if target is None else to_input(target))}
