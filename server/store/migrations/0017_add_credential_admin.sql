-- The admin role (AccountService): `smsgw credential create --account ID --admin`.
ALTER TABLE credentials ADD COLUMN admin boolean NOT NULL DEFAULT false;
