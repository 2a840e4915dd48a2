"""The cost of one sample: torch's FLOP counter over a whole generation (matmuls, attention and
convolutions, the decoder included), with a run's settings."""
from torch.utils.flop_counter import FlopCounterMode

from models import CheckerboardGenerator
from models.sampler import Sampler
from sampling.config import SampleConfig
from sampling.plan import draw, plan_for


def flops_per_sample(model: CheckerboardGenerator, config: SampleConfig, device) -> int:
    """Guidance doubles the transformer's rows from cfg_start_step on, not the decoder's."""
    plan = plan_for(config, model)
    with FlopCounterMode(display=False) as counter:
        draw(Sampler(model), plan, [0], device)
    return counter.get_total_flops()
