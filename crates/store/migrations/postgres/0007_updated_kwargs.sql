-- An approver may approve with edited arguments: they are stored beside spec.kwargs (which stays as
-- the agent sent it) and returned as status.updated_kwargs.
ALTER TABLE requests ADD COLUMN updated_kwargs TEXT;
