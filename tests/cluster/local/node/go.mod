module mlopslocal/node

go 1.24
