-- Runs once, when the data directory is first initialised: one database per Parallax service,
-- all owned by the `parallax` role the image creates from POSTGRES_USER.
CREATE DATABASE posture OWNER parallax;
CREATE DATABASE runtime OWNER parallax;
CREATE DATABASE policygen OWNER parallax;
CREATE DATABASE correlator OWNER parallax;
