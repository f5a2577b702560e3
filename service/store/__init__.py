"""The service's state: the database (engine, tables, migrations, the repositories that hold
every SQL statement) and the object storage of uploads and artifacts."""
