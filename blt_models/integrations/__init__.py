"""Adapters to the tools researchers already use (optional extras, imported on demand).

* [`blt_models.integrations.brainscore`][blt_models.integrations.brainscore]: any zoo model as a Brain-Score ``BrainModel`` with
  time bins from the model's clock (extra ``brainscore``, in its own environment).
* [`blt_models.integrations.thingsvision`][blt_models.integrations.thingsvision]: a thingsvision extractor whose module names address
  a layer at a step (``layer3@t7``) or across all steps (extra ``thingsvision``, in its own environment).
"""
