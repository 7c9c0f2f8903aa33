"""Progressive rollouts in the control plane (decisions in `rrm.core.rollouts`):

- `records`: rollout rows as the core's values and back; what a fleet needs to render an active rollout;
- `lifecycle`: starting one when a component with a policy gets a new revision, rolling back, operator
  actions;
- `controller`: the leader's pass that steps every active rollout from what the agents report;
- `views`: what the admin API shows.
"""
