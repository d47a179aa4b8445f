"""ACD: queues, skills, agents and their state machine, strategies, overflow, callback.

``hotline.acd.config`` holds the configuration models (:class:`Queue`, :class:`Skill`, :class:`Agent`,
:class:`ReasonCode`) and the agent password helpers.
"""
