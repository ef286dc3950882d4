"""Training of the project's models: the EDM prior (`prior`), its consistency distillation
(`distill`) and the learned codec (`codec`), behind `percept train KIND` (`cli`)."""
