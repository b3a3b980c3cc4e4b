-- The chat a run was asked for in, when its result goes to another one (a community that sends results
-- to its members' private chats): its progress message is there, and the result falls back to it when
-- the private chat refuses the bot. NULL when the result goes where it was asked for.
ALTER TABLE runs ADD COLUMN asked_in_chat_id TEXT;
